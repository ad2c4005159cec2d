//go:build !unix

package processor

import "errors"

func openJournal(dir, _, _, _ string, _ int) (*journal, error) {
	return nil, journalError(dir, errors.New("crash journals need a unix system; leave consumer.state_dir empty"))
}

func (j *journal) close() {}

func crashedJournals(string, string, string) ([]string, func(), error) { return nil, func() {}, nil }
