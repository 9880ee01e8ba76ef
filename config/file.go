package config

// file is the YAML shape: every key a user may write, with strings where parsing happens later so
// that a bad value is reported with the field's position.
type file struct {
	TokenURL     *string       `yaml:"token_url"` // nil when absent: only then is Stora's the default
	Issuer       *string       `yaml:"issuer"`
	AuthorizeURL string        `yaml:"authorize_url"`
	AuthMethod   string        `yaml:"token_endpoint_auth_method"`
	Encoding     string        `yaml:"token_request_encoding"`
	Audience     string        `yaml:"audience"`
	Resource     stringList    `yaml:"resource"`
	Schedule     string        `yaml:"schedule"`
	RenewBefore  duration      `yaml:"renew_before"`
	Concurrency  int           `yaml:"concurrency"`
	RateLimit    fileRateLimit `yaml:"rate_limit"`
	PassDeadline duration      `yaml:"pass_deadline"`
	// RefreshWarning: refresh_token_warning.
	RefreshWarning duration     `yaml:"refresh_token_warning"`
	Vault          fileVault    `yaml:"vault"`
	Clients        []fileClient `yaml:"clients"`
}

// duration is a key that holds a Go duration such as 30m, parsed in resolve. Its own type lets
// checkTypes answer a bare number with the duration to write instead.
type duration string

// stringList is a key that holds one string or a list of strings (resource: one URI, or several).
type stringList []string

// UnmarshalYAML takes a single string as a list of one; checkTypes has already refused any other
// shape.
func (l *stringList) UnmarshalYAML(unmarshal func(any) error) error {
	var one string
	if err := unmarshal(&one); err == nil {
		*l = stringList{one}
		return nil
	}
	var list []string
	if err := unmarshal(&list); err != nil {
		return err
	}
	*l = list
	return nil
}

type fileRateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	PerMinute float64 `yaml:"per_minute"`
}

type fileVault struct {
	Address string   `yaml:"address"`
	Auth    fileAuth `yaml:"auth"`
	KVMount string   `yaml:"kv_mount"`
}

type fileAuth struct {
	Method       string `yaml:"method"`
	TokenFile    string `yaml:"token_file"`
	Role         string `yaml:"role"`
	Mount        string `yaml:"mount"`
	JWTFile      string `yaml:"jwt_file"`
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"`
}

type fileClient struct {
	Name         string     `yaml:"name"`
	Grant        string     `yaml:"grant"`
	Scope        string     `yaml:"scope"`
	Secret       string     `yaml:"secret"`
	Output       string     `yaml:"output"`
	TokenURL     string     `yaml:"token_url"`
	Issuer       string     `yaml:"issuer"`
	AuthorizeURL string     `yaml:"authorize_url"`
	AuthMethod   string     `yaml:"token_endpoint_auth_method"`
	Encoding     string     `yaml:"token_request_encoding"`
	Audience     string     `yaml:"audience"`
	Resource     stringList `yaml:"resource"`
	Connections  string     `yaml:"connections"`
	OutputPrefix string     `yaml:"output_prefix"`
}

// defaults are the values a key takes when the file leaves it out. token_url's default,
// DefaultTokenURL, is set in resolve: only when there is no issuer either.
func defaults() file {
	return file{
		Schedule:       "*/5 * * * *",
		RenewBefore:    "30m",
		Concurrency:    4,
		RateLimit:      fileRateLimit{PerSecond: 10, PerMinute: 60},
		PassDeadline:   "10m",
		RefreshWarning: "24h",
		Vault: fileVault{
			Auth:    fileAuth{Method: AuthToken},
			KVMount: "secret",
		},
	}
}
