package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// completionCommand prints a shell completion script. The scripts ask the
// binary itself (auditproc __complete WORDS...) for the candidates, so they
// follow the command tree and flags of the installed version.
func completionCommand() *command {
	return &command{
		name:    "completion",
		summary: "print a shell completion script (bash, zsh or fish)",
		usage:   "bash|zsh|fish",
		examples: `  # bash: now, and in every new shell
  source <(auditproc completion bash)
  auditproc completion bash | sudo tee /etc/bash_completion.d/auditproc

  # zsh
  auditproc completion zsh > "${fpath[1]}/_auditproc"

  # fish
  auditproc completion fish > ~/.config/fish/completions/auditproc.fish`,
		run: func(_ context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			if len(args) != 1 {
				return usagef("completion takes one argument: bash, zsh or fish")
			}
			script, ok := completionScripts[args[0]]
			if !ok {
				return usagef("completion: %q is not bash, zsh or fish", args[0])
			}
			_, err := io.WriteString(sio.out, script)
			return err
		},
	}
}

var completionScripts = map[string]string{
	"bash": `# bash completion for auditproc (auditproc completion bash)
_auditproc() {
  local cur=${COMP_WORDS[COMP_CWORD]}
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$(auditproc __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)" -- "$cur"))
}
complete -o default -F _auditproc auditproc
`,
	"zsh": `#compdef auditproc
# zsh completion for auditproc (auditproc completion zsh)
_auditproc() {
  local -a candidates
  candidates=(${(f)"$(auditproc __complete ${words[2,CURRENT-1]} 2>/dev/null)"})
  _describe 'auditproc' candidates || _files
}
compdef _auditproc auditproc
`,
	"fish": `# fish completion for auditproc (auditproc completion fish)
complete -c auditproc -f -a '(auditproc __complete (commandline -opc)[2..-1] 2>/dev/null)'
`,
}

// completeCandidates lists what may follow words (the command line after
// "auditproc", without the word being typed): the sub-commands of a group,
// or the flags of a command.
func completeCandidates(c *command, words []string) []string {
	for _, w := range words {
		if strings.HasPrefix(w, "-") || len(c.subs) == 0 {
			continue
		}
		for _, s := range c.subs {
			if s.name == w {
				c = s
				break
			}
		}
	}
	var out []string
	if len(c.subs) > 0 {
		for _, s := range c.subs {
			if !s.hidden {
				out = append(out, s.name)
			}
		}
		return out
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	if c.flags != nil {
		c.flags(fs)
	}
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "--"+f.Name) })
	out = append(out, "--help")
	sort.Strings(out)
	return out
}

// completeCommand is the hidden command the completion scripts call.
func completeCommand() *command {
	return &command{
		name:    "__complete",
		hidden:  true,
		rawArgs: true,
		run: func(_ context.Context, sio stdio, _ *flag.FlagSet, args []string) error {
			for _, c := range completeCandidates(root(), args) {
				fmt.Fprintln(sio.out, c)
			}
			return nil
		},
	}
}
