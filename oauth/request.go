package oauth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
)

// Grant types, as sent in the grant_type parameter (RFC 6749 §4.1.3, §4.4.2, §6).
const (
	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
)

// Client authentication methods at the token endpoint, named as RFC 7591 §2 names them.
const (
	// AuthClientSecretPost sends client_id and client_secret in the body (RFC 6749 §2.3.1), the one
	// method the Stora contract documents. The default.
	AuthClientSecretPost = "client_secret_post"
	// AuthClientSecretBasic sends them in an HTTP Basic Authorization header, each form-encoded
	// first (RFC 6749 §2.3.1), and neither in the body.
	AuthClientSecretBasic = "client_secret_basic"
	// AuthNone is a public client (RFC 6749 §2.1): client_id in the body, no secret sent, and an
	// authorization code exchanged only with its PKCE code_verifier.
	AuthNone = "none"
)

// Request body encodings.
const (
	// EncodingJSON is an application/json body, as the Stora contract documents. The default.
	EncodingJSON = "json"
	// EncodingForm is an application/x-www-form-urlencoded body, as RFC 6749 §4 specifies.
	EncodingForm = "form"
)

// Request is one token request. Which fields are sent depends on GrantType:
// client_credentials sends Scope; authorization_code sends Code, RedirectURI and, when set,
// CodeVerifier; refresh_token sends RefreshToken and, when set, Scope. How the client
// authenticates is AuthMethod's business; how the body is encoded is Encoding's.
type Request struct {
	GrantType    string
	ClientID     string
	ClientSecret string // never sent under AuthNone
	Scope        string // space-separated, RFC 6749 §3.3
	RefreshToken string
	Code         string
	RedirectURI  string
	CodeVerifier string
	// AuthMethod is AuthClientSecretPost (when empty), AuthClientSecretBasic or AuthNone.
	AuthMethod string
	// Encoding is EncodingJSON (when empty) or EncodingForm.
	Encoding string
	// Audience, when set, is sent as the audience parameter (Auth0 and others) with every grant.
	Audience string
	// Resources, when set, are sent as resource parameters (RFC 8707 §2) with every grant: in a
	// form body one resource= per URI; in a JSON body a string for one and an array for several.
	Resources []string
}

// body returns the body parameters of the request, and the Authorization header value when the
// client authenticates with HTTP Basic, or an error naming the first missing parameter. Error
// texts never contain parameter values.
func (r Request) body() (b map[string]any, authorization string, err error) {
	b = map[string]any{"grant_type": r.GrantType}
	switch r.AuthMethod {
	case "", AuthClientSecretPost:
		if r.ClientID == "" || r.ClientSecret == "" {
			return nil, "", errors.New("client_id and client_secret are required")
		}
		b["client_id"], b["client_secret"] = r.ClientID, r.ClientSecret
	case AuthClientSecretBasic:
		if r.ClientID == "" || r.ClientSecret == "" {
			return nil, "", errors.New("client_id and client_secret are required")
		}
		authorization = basicAuthorization(r.ClientID, r.ClientSecret)
	case AuthNone:
		if r.ClientID == "" {
			return nil, "", errors.New("client_id is required")
		}
		if r.GrantType == GrantClientCredentials {
			return nil, "", errors.New("a public client (token_endpoint_auth_method none) cannot use the client_credentials grant")
		}
		b["client_id"] = r.ClientID
	default:
		return nil, "", errors.New("unknown token_endpoint_auth_method " + r.AuthMethod)
	}
	switch r.Encoding {
	case "", EncodingJSON, EncodingForm:
	default:
		return nil, "", errors.New("unknown token request encoding " + r.Encoding)
	}
	switch r.GrantType {
	case GrantClientCredentials:
	case GrantAuthorizationCode:
		if r.Code == "" || r.RedirectURI == "" {
			return nil, "", errors.New("authorization_code grant needs code and redirect_uri")
		}
		b["code"] = r.Code
		b["redirect_uri"] = r.RedirectURI
		if r.CodeVerifier != "" {
			b["code_verifier"] = r.CodeVerifier
		} else if r.AuthMethod == AuthNone {
			return nil, "", errors.New("a public client (token_endpoint_auth_method none) exchanges a code only with its PKCE code_verifier")
		}
	case GrantRefreshToken:
		if r.RefreshToken == "" {
			return nil, "", errors.New("refresh_token grant needs a refresh token")
		}
		b["refresh_token"] = r.RefreshToken
	default:
		return nil, "", errors.New("unsupported grant type " + r.GrantType)
	}
	if r.Scope != "" && r.GrantType != GrantAuthorizationCode {
		b["scope"] = r.Scope
	}
	if r.Audience != "" {
		b["audience"] = r.Audience
	}
	switch len(r.Resources) {
	case 0:
	case 1:
		b["resource"] = r.Resources[0]
	default:
		b["resource"] = r.Resources
	}
	return b, authorization, nil
}

// basicAuthorization is the Authorization header value of RFC 6749 §2.3.1: client_id and
// client_secret each encoded with application/x-www-form-urlencoded (Appendix B: space as '+'),
// joined by ':', in base64. It is as secret as the client_secret.
func basicAuthorization(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// encode returns the body bytes and their Content-Type: JSON (object members in key order, as
// encoding/json writes a map) or a form (keys in order, as url.Values encodes; a list is the key
// repeated, its values in order). Every value is a string or a list of strings.
func (r Request) encode(fields map[string]any) ([]byte, string, error) {
	if r.Encoding == EncodingForm {
		v := url.Values{}
		for k, s := range fields {
			switch s := s.(type) {
			case string:
				v.Set(k, s)
			case []string:
				v[k] = s
			}
		}
		return []byte(v.Encode()), "application/x-www-form-urlencoded", nil
	}
	body, err := json.Marshal(fields)
	return body, "application/json", err
}
