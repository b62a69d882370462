package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
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
	dialErrorLimit     int // failed dials tolerated; -1: no limit
	perDialTimeout     int // seconds for the TCP connect of one dial; 0: none
	proxy              *connSpec
}

func (c *connSpec) endpoint() string { return net.JoinHostPort(c.host, strconv.Itoa(c.port)) }

// parseConnection reads a checked connection object (defaults already filled in by Check; the
// same defaults apply to state written without them).
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
	c := &connSpec{user: "root"}
	var err error
	if c.host, _, err = getString(o, "host"); err != nil {
		return nil, err
	}
	if user, ok, err := getString(o, "user"); err != nil {
		return nil, err
	} else if ok {
		c.user = user
	}
	port, err := getNumber(o, "port", 22)
	if err != nil {
		return nil, err
	}
	c.port = int(port)
	limit, err := getNumber(o, "dialErrorLimit", 10)
	if err != nil {
		return nil, err
	}
	c.dialErrorLimit = int(limit)
	timeout, err := getNumber(o, "perDialTimeout", 15)
	if err != nil {
		return nil, err
	}
	c.perDialTimeout = int(math.Max(timeout, 0))
	for k, dst := range map[resource.PropertyKey]**string{
		"password": &c.password, "privateKey": &c.privateKey, "privateKeyPassword": &c.privateKeyPassword,
		"agentSocketPath": &c.agentSocketPath, "hostKey": &c.hostKey,
	} {
		if s, ok, err := getString(o, k); err != nil {
			return nil, err
		} else if ok {
			*dst = &s
		}
	}
	if allowProxy {
		if po, ok, err := getObject(o, "proxy"); err != nil {
			return nil, err
		} else if ok {
			if c.proxy, err = parseConnObject(po, false); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

// clientConfig is upstream's SSHConfig (remote/connection.go), fact by fact:
//   - with hostKey, only that key is accepted and only its own algorithm is offered (an RSA host
//     key offers "ssh-rsa", which OpenSSH 8.8 and later refuse: use an ed25519 or ECDSA key);
//   - the per-dial timeout bounds the TCP connect only, not the SSH handshake;
//   - an agent is used from agentSocketPath, else from SSH_AUTH_SOCK when set; if that socket
//     can't be opened the connection fails at once (a stale SSH_AUTH_SOCK fails every remote
//     operation, before any dial).
//
// The returned function closes the agent connection, if one was opened.
func (c *connSpec) clientConfig() (*ssh.ClientConfig, func(), error) {
	closeAgent := func() {}
	cfg := &ssh.ClientConfig{User: c.user, Timeout: time.Duration(c.perDialTimeout) * time.Second,
		HostKeyCallback: ssh.InsecureIgnoreHostKey()} //nolint:gosec // upstream's behaviour without hostKey
	if c.hostKey != nil {
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(*c.hostKey))
		if err != nil {
			return nil, closeAgent, fmt.Errorf("failed to parse host key: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(key)
		cfg.HostKeyAlgorithms = []string{key.Type()}
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
			return nil, closeAgent, err // x/crypto's messages never contain key material
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if c.password != nil {
		password := *c.password
		cfg.Auth = append(cfg.Auth, ssh.Password(password),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = password
				}
				return answers, nil
			}))
	}
	socket := c.agentSocketPath
	if socket == nil {
		if env := os.Getenv("SSH_AUTH_SOCK"); env != "" {
			socket = &env
		}
	}
	if socket != nil {
		conn, err := net.Dial("unix", *socket)
		if err != nil {
			return nil, closeAgent, err
		}
		closeAgent = func() { _ = conn.Close() }
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	return cfg, closeAgent, nil
}

// Retry pacing between dials (upstream: pulumi sdk go/common/util/retry defaults, used by
// remote/connection.go dialWithRetry): 100 ms, growing 1.5x, at most 5 s. With the default
// dialErrorLimit of 10, a host that refuses connections fails after 11 dials and about 11 s.
const (
	dialRetryDelay    = 100 * time.Millisecond
	dialRetryBackoff  = 1.5
	dialRetryMaxDelay = 5 * time.Second
)

// dialWithRetry calls dial until it succeeds, the context ends, or more than limit dials failed
// (limit -1: no limit). Each failure is reported as a status line "<what> N/limit failed: retrying".
func dialWithRetry[T any](ctx context.Context, what string, limit int, log *engineLog, urn resource.URN,
	dial func() (T, error),
) (T, error) {
	var zero T
	delay := dialRetryDelay
	for try := 0; ; try++ {
		result, err := dial()
		if err == nil {
			return result, nil
		}
		dials := try + 1
		if limit > -1 && dials > limit {
			return zero, fmt.Errorf("after %d failed attempts: %w", try, err)
		}
		limitText := "inf"
		if limit != -1 {
			limitText = strconv.Itoa(limit)
		}
		log.status(urn, "%s %d/%s failed: retrying", what, dials, limitText)
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(min(delay, dialRetryMaxDelay)):
		}
		delay = time.Duration(float64(min(delay, dialRetryMaxDelay)) * dialRetryBackoff)
	}
}

// dial opens a new SSH connection (through the proxy, if any), as upstream's Connection.Dial.
// Every call makes a new TCP connection: nothing is pooled.
func dial(ctx context.Context, c *connSpec, log *engineLog, urn resource.URN) (*ssh.Client, error) {
	cfg, closeAgent, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	defer closeAgent() // agent signers are only asked for during the handshake
	if c.proxy == nil {
		return dialWithRetry(ctx, "Dial", c.dialErrorLimit, log, urn, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", c.endpoint(), cfg)
		})
	}
	proxyCfg, closeProxyAgent, err := c.proxy.clientConfig()
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	defer closeProxyAgent()
	proxyClient, err := dialWithRetry(ctx, "Dial proxy", c.proxy.dialErrorLimit, log, urn, func() (*ssh.Client, error) {
		return ssh.Dial("tcp", c.proxy.endpoint(), proxyCfg)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	conn, err := dialWithRetry(ctx, "Dial from proxy", c.dialErrorLimit, log, urn, func() (net.Conn, error) {
		return proxyClient.Dial("tcp", c.endpoint())
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	type handshake struct {
		conn  ssh.Conn
		chans <-chan ssh.NewChannel
		reqs  <-chan *ssh.Request
	}
	h, err := dialWithRetry(ctx, "Dial", c.dialErrorLimit, log, urn, func() (handshake, error) {
		sc, chans, reqs, err := ssh.NewClientConn(conn, c.endpoint(), cfg)
		return handshake{sc, chans, reqs}, err
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ssh.NewClient(h.conn, h.chans, h.reqs), nil
}

// runRemote runs spec.command in a session of a new SSH connection, as upstream
// remote/commandOutputs.go does:
//   - every `environment` variable goes through an SSH "env" request; one the server refuses
//     (no AcceptEnv for it) fails the command before it runs, with an error in the log;
//   - PULUMI_COMMAND_STDOUT/STDERR are offered the same way, and a refusal is only a warning;
//   - the connection is left open when the command is done (it closes when the provider exits);
//   - a cancelled deployment does not stop a command that already runs.
func runRemote(ctx context.Context, conn *connSpec, spec runSpec, log *engineLog) (string, string, error) {
	client, err := dial(ctx, conn, log, spec.urn)
	if err != nil {
		return "", "", err
	}
	session, err := client.NewSession()
	if err != nil {
		return "", "", err
	}
	defer session.Close()

	for _, k := range sortedKeys(spec.env) {
		if err := session.Setenv(k, spec.env[k]); err != nil {
			log.error(spec.urn, "%s", setenvRefused(k))
			return "", "", fmt.Errorf("could not set environment variable %q: %w", k, err)
		}
	}
	if spec.addPrev {
		for _, prev := range []struct{ name, value string }{{envPrevStdout, spec.prevStdout}, {envPrevStderr, spec.prevStderr}} {
			if prev.value == "" {
				continue
			}
			if err := session.Setenv(prev.name, prev.value); err != nil {
				log.warn(spec.urn, "%s", setenvRefused(prev.name))
			}
		}
	}
	if spec.stdin != "" {
		session.Stdin = strings.NewReader(spec.stdin)
	}
	c := newCapture(spec, log)
	session.Stdout, session.Stderr = c.writers(spec)
	err = session.Run(spec.command)
	stdout, stderr := c.finish()
	if err != nil {
		return "", "", c.failure(err, spec.command)
	}
	return stdout, stderr, nil
}

func setenvRefused(name string) string {
	return fmt.Sprintf("Unable to set '%s': the SSH server takes only the variables its AcceptEnv setting "+
		"lists. Add %s to AcceptEnv, or set it in the command itself ('%s=value command' in a POSIX shell).",
		name, name, name)
}

var errNoSource = errors.New("either asset or archive must be set")
