// Command stora-app is the smallest app that calls the Stora API with the token token-rotator
// keeps in Vault, through package apptoken: it logs in to Vault (VAULT_ADDR, and VAULT_TOKEN or
// the -auth method), sends GET -url with the token, and prints the response status. A 401 from
// the API is handled by the Transport: Vault is read again and the request sent once more.
//
//	VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=... stora-app -path apps/acme -url https://api.stora.co/api/v1/contacts
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"

	"token-rotator/apptoken"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "stora-app:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("stora-app", flag.ContinueOnError)
	opts := apptoken.Options{}
	login := apptoken.Login{}
	fs.StringVar(&opts.Mount, "mount", "secret", "KV mount of the output secret")
	fs.StringVar(&opts.Path, "path", "", "output path under the mount, e.g. apps/acme (required)")
	url := fs.String("url", "", "Stora API URL to GET (required)")
	fs.StringVar(&login.Method, "auth", "token", "Vault auth method: token, kubernetes or approle")
	fs.StringVar(&login.TokenFile, "token-file", "", "token: file holding the Vault token (default VAULT_TOKEN)")
	fs.StringVar(&login.Role, "role", "", "kubernetes: Vault role")
	fs.StringVar(&login.Mount, "auth-mount", "", "kubernetes, approle: auth mount (default the method's name)")
	fs.StringVar(&login.RoleID, "role-id", "", "approle: role ID")
	fs.StringVar(&login.SecretIDFile, "secret-id-file", "", "approle: file holding the secret ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if opts.Path == "" || *url == "" {
		return errors.New("-path and -url are required")
	}
	opts.Login = &login
	src, err := apptoken.Open(ctx, opts)
	if err != nil {
		return err
	}
	client := src.Client(&http.Client{Timeout: 30 * time.Second})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	fmt.Fprintln(stdout, resp.Status)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("the API answered %s", resp.Status)
	}
	return nil
}
