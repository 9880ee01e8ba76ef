package oauth

import "errors"

// Grant types, as sent in the grant_type parameter (RFC 6749 §4.1.3, §4.4.2, §6).
const (
	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
)

// Request is one token request. Which fields are sent depends on GrantType:
// client_credentials sends Scope; authorization_code sends Code, RedirectURI and, when set,
// CodeVerifier; refresh_token sends RefreshToken and, when set, Scope. ClientID and ClientSecret
// are always sent in the body, the one client authentication method the Stora contract documents.
type Request struct {
	GrantType    string
	ClientID     string
	ClientSecret string
	Scope        string // space-separated, RFC 6749 §3.3
	RefreshToken string
	Code         string
	RedirectURI  string
	CodeVerifier string
}

// body returns the JSON body of the request, or an error naming the first missing parameter.
// Error texts never contain parameter values.
func (r Request) body() (map[string]string, error) {
	if r.ClientID == "" || r.ClientSecret == "" {
		return nil, errors.New("client_id and client_secret are required")
	}
	b := map[string]string{
		"grant_type":    r.GrantType,
		"client_id":     r.ClientID,
		"client_secret": r.ClientSecret,
	}
	switch r.GrantType {
	case GrantClientCredentials:
	case GrantAuthorizationCode:
		if r.Code == "" || r.RedirectURI == "" {
			return nil, errors.New("authorization_code grant needs code and redirect_uri")
		}
		b["code"] = r.Code
		b["redirect_uri"] = r.RedirectURI
		if r.CodeVerifier != "" {
			b["code_verifier"] = r.CodeVerifier
		}
	case GrantRefreshToken:
		if r.RefreshToken == "" {
			return nil, errors.New("refresh_token grant needs a refresh token")
		}
		b["refresh_token"] = r.RefreshToken
	default:
		return nil, errors.New("unsupported grant type " + r.GrantType)
	}
	if r.Scope != "" && r.GrantType != GrantAuthorizationCode {
		b["scope"] = r.Scope
	}
	return b, nil
}
