package oauth

import (
	"encoding/json"
	"fmt"
	"io"
)

// PartialTokenError is a 2xx token response (RFC 6749 §5.1) whose access token could not be used
// but which carried a well-formed new refresh token: the server has rotated the refresh token, so
// the caller must store RefreshToken even though it refuses the access token. Err says what was
// wrong with the access token part; errors.As reaches it, with Status the HTTP status and Reason
// set. Its Error text never contains RefreshToken, and neither fmt nor encoding/json prints it.
//
// A response is partial only when RefreshToken is unambiguous: a JSON string of printable ASCII,
// not blank, appearing once in a body that is one JSON object without an "error" member. Any
// other refused 2xx response is a plain *Error.
type PartialTokenError struct {
	Err          *Error
	RefreshToken string
}

func (e *PartialTokenError) Error() string {
	const prefix = "refresh token rotated, access token refused"
	if e.Err == nil {
		return prefix
	}
	return prefix + ": " + e.Err.Error()
}

// Unwrap returns Err.
func (e *PartialTokenError) Unwrap() error { return e.Err }

// Format prints the error text for every verb, and GoString for %#v, so that no verb prints
// RefreshToken. It has a value receiver so that a dereferenced error prints the same way.
func (e PartialTokenError) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, e.GoString())
		return
	}
	fmt.Fprintf(f, fmt.FormatString(f, verb), e.Error())
}

// GoString is the Go syntax of e with RefreshToken redacted.
func (e PartialTokenError) GoString() string {
	return fmt.Sprintf("&oauth.PartialTokenError{Err:%#v, RefreshToken:\"[redacted]\"}", e.Err)
}

// MarshalJSON encodes e as its error text, so that encoding/json, and slog's JSON handler given
// a PartialTokenError value, never write RefreshToken.
func (e PartialTokenError) MarshalJSON() ([]byte, error) { return json.Marshal(e.Error()) }
