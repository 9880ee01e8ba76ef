package config

import (
	"os"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// envRef matches ${NAME} and ${NAME:-default}.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expandEnv replaces ${NAME} and ${NAME:-default} in every string scalar of the document, in
// place. A variable that is unset and has no default is an error at the scalar's position.
func expandEnv(root ast.Node, path string) Errors {
	var errs Errors
	for _, n := range ast.Filter(ast.StringType, root) {
		s := n.(*ast.StringNode)
		s.Value = envRef.ReplaceAllStringFunc(s.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			if v, ok := os.LookupEnv(m[1]); ok {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			pos := s.GetToken().Position
			errs = append(errs, &Error{File: path, Line: pos.Line, Column: pos.Column,
				Field: strings.TrimPrefix(strings.TrimPrefix(s.GetPath(), "$"), "."),
				Msg:   "environment variable " + m[1] + " is not set (use ${" + m[1] + ":-default} for a default)"})
			return ""
		})
		s.Value = strings.TrimSpace(s.Value)
	}
	return errs
}
