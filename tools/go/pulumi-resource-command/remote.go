package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// connSpec is a remote connection (schema type command:remote:Connection, or
// command:remote:ProxyConnection for proxy).
type connSpec struct {
	host               string
	port               int
	user               string
	password           *string
	privateKey         *string
	privateKeyPassword *string
	agentSocketPath    *string
	hostKey            *string
	dialErrorLimit     int // allowed dial errors; -1 = unlimited
	perDialTimeout     time.Duration
	proxy              *connSpec
}

// String never includes credentials.
func (c *connSpec) String() string {
	return fmt.Sprintf("%s@%s", c.user, net.JoinHostPort(c.host, strconv.Itoa(c.port)))
}

func optString(m resource.PropertyMap, k resource.PropertyKey) (*string, error) {
	s, ok, err := getString(m, k)
	if err != nil || !ok {
		return nil, err
	}
	return &s, nil
}

// parseConnection reads a connection object from props[k], applying the same
// defaults as Check (so state written by other tools still works).
func parseConnection(props resource.PropertyMap, k resource.PropertyKey) (*connSpec, error) {
	o, ok, err := getObject(props, k)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("missing required property '%s'", k)
	}
	return parseConnObject(o, true)
}

func parseConnObject(o resource.PropertyMap, allowProxy bool) (*connSpec, error) {
	c := &connSpec{}
	var err error
	var ok bool
	if c.host, ok, err = getString(o, "host"); err != nil {
		return nil, err
	} else if !ok || c.host == "" {
		return nil, errors.New("connection: missing required property 'host'")
	}
	if c.user, ok, err = getString(o, "user"); err != nil {
		return nil, err
	} else if !ok {
		c.user = "root"
	}
	port, err := getNumber(o, "port", 22)
	if err != nil {
		return nil, err
	}
	if port <= 0 || port > 65535 || port != math.Trunc(port) {
		return nil, fmt.Errorf("connection: invalid port %v", port)
	}
	c.port = int(port)
	limit, err := getNumber(o, "dialErrorLimit", 10)
	if err != nil {
		return nil, err
	}
	c.dialErrorLimit = int(limit)
	if c.dialErrorLimit < -1 {
		c.dialErrorLimit = -1
	}
	timeout, err := getNumber(o, "perDialTimeout", 15)
	if err != nil {
		return nil, err
	}
	if timeout > 0 {
		c.perDialTimeout = time.Duration(timeout * float64(time.Second))
	}
	for k, dst := range map[resource.PropertyKey]**string{
		"password": &c.password, "privateKey": &c.privateKey, "privateKeyPassword": &c.privateKeyPassword,
		"agentSocketPath": &c.agentSocketPath, "hostKey": &c.hostKey,
	} {
		if *dst, err = optString(o, k); err != nil {
			return nil, err
		}
	}
	if allowProxy {
		if po, ok, err := getObject(o, "proxy"); err != nil {
			return nil, err
		} else if ok {
			if c.proxy, err = parseConnObject(po, false); err != nil {
				return nil, fmt.Errorf("proxy %w", err)
			}
		}
	}
	return c, nil
}

// clientConfig builds the ssh client configuration. The returned closer releases an
// ssh-agent connection, if one was opened.
func (c *connSpec) clientConfig() (*ssh.ClientConfig, func(), error) {
	closer := func() {}
	cfg := &ssh.ClientConfig{User: c.user, HostKeyCallback: ssh.InsecureIgnoreHostKey()} //nolint:gosec // upstream default without hostKey
	if c.hostKey != nil {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.hostKey))
		if err != nil {
			return nil, closer, fmt.Errorf("connection: hostKey: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(key)
		cfg.HostKeyAlgorithms = hostKeyAlgorithms(key.Type())
	}
	if c.privateKey != nil {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(*c.privateKey), []byte(*c.privateKeyPassword))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(*c.privateKey))
		}
		if err != nil {
			// The error text of x/crypto never contains key material.
			return nil, closer, fmt.Errorf("connection: privateKey: %w", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != nil {
		pw := *c.password
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock, explicit := "", false
	if c.agentSocketPath != nil && *c.agentSocketPath != "" {
		sock, explicit = *c.agentSocketPath, true
	} else {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		conn, err := net.Dial("unix", sock)
		switch {
		case err == nil:
			closer = func() { _ = conn.Close() }
			cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		case explicit:
			return nil, closer, fmt.Errorf("connection: agentSocketPath: %w", err)
		}
	}
	return cfg, closer, nil
}

// hostKeyAlgorithms lists the signature algorithms a server may use with a key of keyType.
func hostKeyAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// sshClient is a connected client; Close also closes the proxy hop.
type sshClient struct {
	*ssh.Client
	proxy *ssh.Client
}

func (c *sshClient) Close() error {
	err := c.Client.Close()
	if c.proxy != nil {
		_ = c.proxy.Close()
	}
	return err
}

// handshake runs the SSH handshake over conn, bounded by timeout (0 = none).
func handshake(conn net.Conn, addr string, cfg *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { _ = conn.Close() })
		defer t.Stop()
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// dialOnce opens one new TCP connection (through the proxy, if any) and runs the
// SSH handshake. Every call makes a new connection: nothing is pooled.
func dialOnce(ctx context.Context, c *connSpec) (*sshClient, error) {
	cfg, closeAgent, err := c.clientConfig()
	if err != nil {
		return nil, permanent(err)
	}
	defer closeAgent() // agent signers are fetched during the handshake only
	addr := net.JoinHostPort(c.host, strconv.Itoa(c.port))

	if c.proxy != nil {
		pcfg, closeProxyAgent, err := c.proxy.clientConfig()
		if err != nil {
			return nil, permanent(fmt.Errorf("proxy: %w", err))
		}
		defer closeProxyAgent()
		paddr := net.JoinHostPort(c.proxy.host, strconv.Itoa(c.proxy.port))
		pconn, err := dialTCP(ctx, paddr, c.proxy.perDialTimeout)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", paddr, err)
		}
		proxy, err := handshake(pconn, paddr, pcfg, c.proxy.perDialTimeout)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", paddr, err)
		}
		dctx, cancel := withOptionalTimeout(ctx, c.perDialTimeout)
		conn, err := proxy.DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			_ = proxy.Close()
			return nil, fmt.Errorf("dial %s through proxy: %w", addr, err)
		}
		client, err := handshake(conn, addr, cfg, c.perDialTimeout)
		if err != nil {
			_ = proxy.Close()
			return nil, err
		}
		return &sshClient{Client: client, proxy: proxy}, nil
	}

	conn, err := dialTCP(ctx, addr, c.perDialTimeout)
	if err != nil {
		return nil, err
	}
	client, err := handshake(conn, addr, cfg, c.perDialTimeout)
	if err != nil {
		return nil, err
	}
	return &sshClient{Client: client}, nil
}

func dialTCP(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(ctx, "tcp", addr)
}

func withOptionalTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d > 0 {
		return context.WithTimeout(ctx, d)
	}
	return context.WithCancel(ctx)
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

func permanent(err error) error { return permanentError{err} }

// Retry pacing between dial attempts: grows from dialRetryDelay by 1.5x up to
// dialRetryMaxDelay. Variables so tests can shorten them.
var (
	dialRetryDelay    = 500 * time.Millisecond
	dialRetryMaxDelay = 5 * time.Second
)

// dial connects with retries: upstream's dialErrorLimit is the number of failed
// dials tolerated, so up to dialErrorLimit+1 attempts are made (-1: no limit), with
// a growing pause between attempts.
func dial(ctx context.Context, c *connSpec, log *engineLog, urn resource.URN) (*sshClient, error) {
	delay := dialRetryDelay
	for errorsSoFar := 1; ; errorsSoFar++ {
		client, err := dialOnce(ctx, c)
		if err == nil {
			return client, nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w", c, ctx.Err())
		}
		if c.dialErrorLimit >= 0 && errorsSoFar > c.dialErrorLimit {
			return nil, fmt.Errorf("dial %s: giving up after %d failed attempt(s): %w", c, errorsSoFar, err)
		}
		limit := "inf"
		if c.dialErrorLimit >= 0 {
			limit = strconv.Itoa(c.dialErrorLimit)
		}
		log.status(urn, "Dial %d/%s failed: retrying", errorsSoFar, limit)
		log.debug(urn, "dial %s failed: %v", c, err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w", c, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(time.Duration(float64(delay)*1.5), dialRetryMaxDelay)
	}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}

// runRemote runs spec.command over a new SSH connection. Environment variables go
// through the SSH "env" request; those the server refuses (no AcceptEnv) are
// exported in front of the command instead.
func runRemote(ctx context.Context, conn *connSpec, spec runSpec, log *engineLog) (string, string, error) {
	client, err := dial(ctx, conn, log, spec.urn)
	if err != nil {
		return "", "", err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { _ = client.Close() })
	defer stop()

	session, err := client.NewSession()
	if err != nil {
		return "", "", fmt.Errorf("ssh session on %s: %w", conn, err)
	}
	defer session.Close()

	command, err := setRemoteEnv(session, spec, log)
	if err != nil {
		return "", "", err
	}
	if spec.stdin != "" {
		session.Stdin = strings.NewReader(spec.stdin)
	}
	c := newCapture(spec, log)
	session.Stdout, session.Stderr = c.writers()
	err = session.Run(command)
	stdout, stderr := c.finish()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		var exitMissing *ssh.ExitMissingError
		if errors.As(err, &exitMissing) || errors.Is(err, io.EOF) {
			err = fmt.Errorf("connection to %s lost before the command finished: %w", conn, err)
		}
		return "", "", c.failure(err, spec)
	}
	return stdout, stderr, nil
}

// maxExportedPrev bounds a previous stdout/stderr exported on the command line when
// the server refuses setenv (one argv string is limited to 128 KiB on Linux).
const maxExportedPrev = 32 << 10

// setRemoteEnv sends the environment through SSH "env" requests and returns the
// command to run: when the server refuses some variables (no AcceptEnv), they are
// exported in front of the command instead. A refused PULUMI_COMMAND_STDOUT/STDERR
// that is too large for that is skipped with a warning, as upstream skips it.
func setRemoteEnv(session interface{ Setenv(string, string) error }, spec runSpec, log *engineLog,
) (string, error) {
	prev := spec.prevEnv()
	vars := map[string]string{}
	for k, v := range prev {
		vars[k] = v
	}
	for k, v := range spec.env {
		vars[k] = v
	}
	var refused []string
	for _, k := range sortedKeys(vars) {
		if err := session.Setenv(k, vars[k]); err == nil {
			continue
		}
		_, isPrev := prev[k]
		_, userSet := spec.env[k]
		if isPrev && !userSet && len(vars[k]) > maxExportedPrev {
			log.warn(spec.urn, "Unable to set '%s': the SSH server does not accept it (AcceptEnv) and "+
				"the value is too large to pass on the command line", k)
			continue
		}
		if !envName.MatchString(k) {
			return "", fmt.Errorf("could not set environment variable %q: the SSH server refused it "+
				"(AcceptEnv) and it is not a valid shell variable name", k)
		}
		refused = append(refused, k)
	}
	if len(refused) == 0 {
		return spec.command, nil
	}
	var b strings.Builder
	b.WriteString("export")
	for _, k := range refused {
		b.WriteString(" " + k + "=" + shellQuote(vars[k]))
	}
	b.WriteString("\n")
	log.debug(spec.urn, "SSH server refused setenv for %s; exporting them in the command instead",
		strings.Join(refused, ", "))
	return b.String() + spec.command, nil
}
