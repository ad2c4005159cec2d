package redistest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
)

// NetworkOption configures Network.
type NetworkOption func(*networkConfig)

type networkConfig struct{ fixed bool }

// WithFixedAddresses makes a network on which containers can have fixed
// addresses, the way StartCluster's container nodes do (WithContainers):
// a node cut off the network (Server.Disconnect) comes back at the address
// it announced to the cluster, as after a real partition. Docker gives
// fixed addresses only on a network whose subnet the user configured, so
// the network gets the subnet Docker would have chosen itself (free of the
// host's routes and of other networks); the lower half of it is kept for
// fixed addresses, the upper half is where containers without one get
// theirs.
func WithFixedAddresses() NetworkOption { return func(c *networkConfig) { c.fixed = true } }

// Network creates a throwaway Docker network for t and returns its name, for
// WithNetwork and for other containers of the test (auditproc replicas next
// to Redis). It is removed in t's cleanup, after the containers started later
// in the test (cleanups run last-registered first). It skips (or fails, see
// SkipOrFail) without Docker.
func Network(t testing.TB, opts ...NetworkOption) string {
	t.Helper()
	RequireDocker(t)
	var nc networkConfig
	for _, o := range opts {
		o(&nc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	labels := tcnetwork.WithLabels(map[string]string{LabelTest: t.Name()})
	var (
		nw  *testcontainers.DockerNetwork
		err error
	)
	if nc.fixed {
		nw, err = fixedNetwork(ctx, labels)
	} else {
		nw, err = tcnetwork.New(ctx, labels)
	}
	if err != nil {
		t.Fatalf("redistest: create docker network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := nw.Remove(ctx); err != nil {
			t.Errorf("redistest: remove docker network %s: %v", nw.Name, err)
		}
	})
	return nw.Name
}

// fixedNetwork asks Docker for a free subnet (a throwaway network from its
// default pools) and creates the network with that subnet configured.
// Another network may take the subnet between the two steps: then it tries
// again.
func fixedNetwork(ctx context.Context, labels tcnetwork.CustomizeNetworkOption) (*testcontainers.DockerNetwork, error) {
	var last error
	for range 5 {
		probe, err := tcnetwork.New(ctx, labels)
		if err != nil {
			return nil, err
		}
		subnet, _, err := networkIPAM(ctx, probe.ID)
		if rerr := probe.Remove(ctx); err == nil {
			err = rerr
		}
		if err != nil {
			return nil, err
		}
		_, upper, err := halves(subnet)
		if err != nil {
			return nil, err
		}
		nw, err := tcnetwork.New(ctx, labels, tcnetwork.WithIPAM(&network.IPAM{
			Driver: "default",
			Config: []network.IPAMConfig{{Subnet: subnet, IPRange: upper}},
		}))
		if err == nil {
			return nw, nil
		}
		last = err
	}
	return nil, fmt.Errorf("redistest: no free subnet for a network with fixed addresses: %w", last)
}

// networkIPAM returns the IPv4 subnet of a network, and its dynamic range
// (zero when the whole subnet is dynamic).
func networkIPAM(ctx context.Context, id string) (subnet, dynamic netip.Prefix, err error) {
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return subnet, dynamic, fmt.Errorf("redistest: docker client: %w", err)
	}
	defer cli.Close()
	res, err := cli.NetworkInspect(ctx, id, client.NetworkInspectOptions{})
	if err != nil {
		return subnet, dynamic, fmt.Errorf("redistest: inspect network %s: %w", id, err)
	}
	for _, c := range res.Network.IPAM.Config {
		if c.Subnet.Addr().Is4() {
			return c.Subnet, c.IPRange, nil
		}
	}
	return subnet, dynamic, fmt.Errorf("redistest: network %s has no IPv4 subnet", id)
}

// halves splits an IPv4 subnet into its lower and upper half.
func halves(p netip.Prefix) (lower, upper netip.Prefix, err error) {
	p = p.Masked()
	if !p.Addr().Is4() || p.Bits() > 28 {
		return lower, upper, fmt.Errorf("redistest: subnet %s: want IPv4, /28 or larger", p)
	}
	bits := p.Bits() + 1
	base := p.Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + 1<<(32-bits)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.PrefixFrom(p.Addr(), bits), netip.PrefixFrom(netip.AddrFrom4(b), bits), nil
}

// fixedAddress is the i-th fixed address (i from 0) of a network made
// WithFixedAddresses: in the lower half of its subnet, after the gateway.
func fixedAddress(ctx context.Context, networkName string, i int) (netip.Addr, error) {
	subnet, dynamic, err := networkIPAM(ctx, networkName)
	if err != nil {
		return netip.Addr{}, err
	}
	lower, upper, err := halves(subnet)
	if err != nil {
		return netip.Addr{}, err
	}
	if dynamic != upper {
		return netip.Addr{}, errors.New("redistest: fixed addresses need a network made by Network(t, WithFixedAddresses())")
	}
	base := lower.Addr().As4()
	n := binary.BigEndian.Uint32(base[:]) + 10 + uint32(i)
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	a := netip.AddrFrom4(b)
	if !lower.Contains(a) {
		return netip.Addr{}, fmt.Errorf("redistest: subnet %s has no room for fixed address %d", subnet, i)
	}
	return a, nil
}
