package redistest

func dockerAvailable() error { return &unavailableError{"container backend not implemented yet"} }

func newContainer(cfg config, name string) (impl, error) { return nil, dockerAvailable() }
