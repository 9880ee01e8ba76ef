package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
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
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a UTF-8 byte order mark
	doc, err := document(path, data)
	if err != nil {
		return nil, err
	}
	if errs := expandEnv(doc.Body, path); len(errs) > 0 {
		return nil, errs
	}
	if errs := checkTypes(doc.Body, reflect.TypeOf(file{}), "", path); len(errs) == 1 {
		return nil, errs[0]
	} else if len(errs) > 1 {
		return nil, errs
	}
	f := defaults()
	if err := decode(doc.Body, &f); err != nil {
		return nil, withField(yamlError(path, err), doc.Body)
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

// yamlError turns a go-yaml error into an *Error with the position of its token, in YAML's words
// rather than Go's.
func yamlError(path string, err error) *Error {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return &Error{File: path, Msg: strings.TrimSpace(err.Error())}
	}
	pos := ye.GetToken().Position
	msg := ye.GetMessage()
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = fmt.Sprintf("want %s, not %s", yamlKind(te.DstType), yamlKind(te.SrcType))
	}
	return &Error{File: path, Line: pos.Line, Column: pos.Column, Msg: strings.TrimSpace(msg)}
}

// yamlKind names a Go type as the YAML a user would write for it.
func yamlKind(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Uint64, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// withField names the field at e's position, found in the document.
func withField(e *Error, root ast.Node) *Error {
	if e.Line == 0 || e.Field != "" {
		return e
	}
	var found ast.Node
	ast.Walk(visitFunc(func(n ast.Node) bool {
		if found != nil {
			return false
		}
		if tk := n.GetToken(); tk != nil && tk.Position.Line == e.Line && tk.Position.Column == e.Column {
			found = n
		}
		return true
	}), root)
	if found != nil {
		e.Field = strings.TrimPrefix(strings.TrimPrefix(found.GetPath(), "$"), ".")
	}
	return e
}

type visitFunc func(ast.Node) bool

func (f visitFunc) Visit(n ast.Node) ast.Visitor {
	if f(n) {
		return f
	}
	return nil
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

// decode decodes the document into f, strictly. The YAML library can panic on hostile input (an
// alias of a mapping where a list belongs, behind a tag: config/testdata/fuzz); that is an error
// here, never a crash.
func decode(body ast.Node, f *file) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the YAML decoder could not read this document (%v): check its anchors, aliases and tags", p)
		}
	}()
	return yaml.NodeToValue(body, f, yaml.DisallowUnknownField())
}
