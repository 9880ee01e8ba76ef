package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Load reads, expands and validates the configuration file at path.
//
// Errors: a *Error or Errors, each naming path:line:column and the field; or the error from
// reading the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load for data already read; path is used in errors only.
func Parse(path string, data []byte) (*Config, error) {
	doc, err := document(path, data)
	if err != nil {
		return nil, err
	}
	if errs := expandEnv(doc.Body, path); len(errs) > 0 {
		return nil, errs
	}
	f := defaults()
	if err := yaml.NodeToValue(doc.Body, &f, yaml.DisallowUnknownField()); err != nil {
		return nil, yamlError(path, err)
	}
	c, errs := f.resolve()
	if len(errs) > 0 {
		for _, e := range errs {
			e.File = path
			e.Line, e.Column = position(doc.Body, e.Field)
		}
		if len(errs) == 1 {
			return nil, errs[0]
		}
		return nil, errs
	}
	c.File = path
	return c, nil
}

// document parses data as exactly one non-empty YAML document whose top level is a mapping.
func document(path string, data []byte) (*ast.DocumentNode, error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, yamlError(path, err)
	}
	var docs []*ast.DocumentNode
	for _, d := range f.Docs {
		if d != nil && d.Body != nil {
			docs = append(docs, d)
		}
	}
	switch {
	case len(docs) == 0:
		return nil, &Error{File: path, Msg: "the file is empty"}
	case len(docs) > 1:
		line, col := nodePos(docs[1].Body)
		return nil, &Error{File: path, Line: line, Column: col, Msg: "more than one YAML document; put everything in one"}
	}
	if docs[0].Body.Type() != ast.MappingType {
		line, col := nodePos(docs[0].Body)
		return nil, &Error{File: path, Line: line, Column: col, Msg: "the top level must be a mapping of keys such as token_url and clients"}
	}
	return docs[0], nil
}

// yamlError turns a go-yaml error into an *Error with the position of its token.
func yamlError(path string, err error) error {
	var ye interface {
		GetToken() *token.Token
		GetMessage() string
	}
	if errors.As(err, &ye) && ye.GetToken() != nil {
		pos := ye.GetToken().Position
		return &Error{File: path, Line: pos.Line, Column: pos.Column, Msg: cleanMessage(ye.GetMessage())}
	}
	return &Error{File: path, Msg: cleanMessage(err.Error())}
}

var goTypeName = regexp.MustCompile(`\bconfig\.file[A-Za-z]*\b`)

// cleanMessage hides the Go type names of the file shape from users.
func cleanMessage(s string) string {
	s = goTypeName.ReplaceAllString(s, "this section")
	return strings.TrimSpace(s)
}

// position finds the line and column of the field path (as "clients[1].grant") in the document,
// falling back to its nearest ancestor present in the file.
func position(root ast.Node, field string) (int, int) {
	for field != "" {
		if p, err := yaml.PathString("$." + field); err == nil {
			if n, err := p.FilterNode(root); err == nil && n != nil {
				return nodePos(n)
			}
		}
		i := strings.LastIndexAny(field, ".[")
		if i < 0 {
			break
		}
		field = field[:i]
	}
	return 0, 0
}

// nodePos is where a node starts: for a mapping, its first key.
func nodePos(n ast.Node) (int, int) {
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) > 0 {
		n = m.Values[0].Key
	}
	pos := n.GetToken().Position
	return pos.Line, pos.Column
}
