package config

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// checkTypes holds every value in the document to the type its field declares, before decoding:
// the YAML decoder would quietly turn `concurrency: '4'` into 4, `4.9` into 4 and `name: 42` into
// "42". A string field takes only a string, a number field only a number. Errors name the field.
func checkTypes(n ast.Node, t reflect.Type, field, path string) Errors {
	n = unwrap(n)
	if n == nil {
		return nil
	}
	wrong := func(want string) Errors {
		line, col := nodePos(n)
		return Errors{{File: path, Line: line, Column: col, Field: field, Msg: fmt.Sprintf("want %s, not %s", want, yamlName(n))}}
	}
	if t == reflect.TypeOf(duration("")) {
		switch n.(type) {
		case *ast.StringNode, *ast.LiteralNode, *ast.NullNode:
			return nil // parsed in resolve
		case *ast.IntegerNode, *ast.FloatNode:
			// `renew_before: 30`: say at once what to write, not "put it in quotes" and then,
			// for "30", that it is not a duration.
			line, col := nodePos(n)
			v := n.GetToken().Value
			return Errors{{File: path, Line: line, Column: col, Field: field,
				Msg: fmt.Sprintf("%s is a number; write a duration such as %s", v, durationLike(v, "30m"))}}
		}
		return wrong("a duration such as 30m")
	}
	if t == reflect.TypeOf(stringList(nil)) {
		switch n.(type) {
		case *ast.StringNode, *ast.LiteralNode, *ast.NullNode:
			return nil
		case *ast.SequenceNode:
			return checkTypes(n, reflect.TypeOf([]string(nil)), field, path)
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
			return wrong("a string or a list of strings (put it in quotes)")
		}
		return wrong("a string or a list of strings")
	}
	switch t.Kind() {
	case reflect.String:
		switch n.(type) {
		case *ast.StringNode, *ast.LiteralNode, *ast.NullNode:
			return nil
		case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
			return wrong("a string (put it in quotes)")
		}
		return wrong("a string")
	case reflect.Int:
		if _, ok := n.(*ast.IntegerNode); ok {
			return nil
		}
		return wrong("a whole number")
	case reflect.Float64:
		switch n.(type) {
		case *ast.IntegerNode, *ast.FloatNode:
			return nil
		}
		return wrong("a number")
	case reflect.Slice:
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			return wrong("a list")
		}
		var errs Errors
		for i, v := range seq.Values {
			errs = append(errs, checkTypes(v, t.Elem(), fmt.Sprintf("%s[%d]", field, i), path)...)
		}
		return errs
	case reflect.Struct:
		m, ok := n.(*ast.MappingNode)
		if !ok {
			return wrong("a mapping")
		}
		var errs Errors
		for _, kv := range m.Values {
			key := kv.Key.GetToken().Value
			for i := 0; i < t.NumField(); i++ {
				if tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; tag == key {
					errs = append(errs, checkTypes(kv.Value, t.Field(i).Type, strings.TrimPrefix(field+"."+key, "."), path)...)
				}
			}
		}
		return errs
	}
	return nil
}

// unwrap looks through anchors and tags to the value; an alias is left to the decoder.
func unwrap(n ast.Node) ast.Node {
	for {
		switch v := n.(type) {
		case *ast.AnchorNode:
			n = v.Value
		case *ast.TagNode:
			n = v.Value
		case *ast.AliasNode:
			return nil
		default:
			return n
		}
	}
}

func yamlName(n ast.Node) string {
	switch n.(type) {
	case *ast.InfinityNode, *ast.NanNode:
		return "infinity or NaN"
	case *ast.IntegerNode, *ast.FloatNode:
		return "a number"
	case *ast.BoolNode:
		return "true or false"
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return "a string"
	}
	return strings.ToLower(n.Type().String())
}
