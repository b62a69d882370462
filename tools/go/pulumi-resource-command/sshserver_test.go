package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// testSSHServer is a minimal in-process SSH server on 127.0.0.1 for the tests: public-key auth,
// "env" (accepted or refused like sshd without AcceptEnv), "exec" (via /bin/sh -c) and the "sftp"
// subsystem (files created 0644, directories 0755 under the usual umask, as OpenSSH's sftp-server).
type testSSHServer struct {
	addr        string
	port        int
	clientKey   string // PEM private key accepted by the server
	hostKey     ssh.PublicKey
	acceptEnv   bool
	connections atomic.Int32 // accepted so far
	open        atomic.Int32 // still open

	mu   sync.Mutex
	envs [][]string // env requests per exec
	ln   net.Listener
}

func genKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, string(pem.EncodeToMemory(block))
}

// rsaHostSigner is an RSA host key offered only with SHA-2 signatures, as OpenSSH 8.8 and later do
// (they refuse the SHA-1 "ssh-rsa" signature algorithm).
func rsaHostSigner(t *testing.T) ssh.Signer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	algorithmSigner, ok := signer.(ssh.AlgorithmSigner)
	if !ok {
		t.Fatal("RSA signer cannot choose its algorithm")
	}
	restricted, err := ssh.NewSignerWithAlgorithms(algorithmSigner, []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256})
	if err != nil {
		t.Fatal(err)
	}
	return restricted
}

func startSSHServer(t *testing.T, acceptEnv bool) *testSSHServer {
	t.Helper()
	hostSigner, _ := genKey(t)
	return startSSHServerWithHostKey(t, acceptEnv, hostSigner)
}

func startSSHServerWithHostKey(t *testing.T, acceptEnv bool, hostSigner ssh.Signer) *testSSHServer {
	t.Helper()
	clientSigner, clientPEM := genKey(t)
	s := &testSSHServer{clientKey: clientPEM, hostKey: hostSigner.PublicKey(), acceptEnv: acceptEnv}
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if string(key.Marshal()) == string(clientSigner.PublicKey().Marshal()) {
				return nil, nil
			}
			return nil, errors.New("unknown key")
		},
	}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = ln
	s.addr = "127.0.0.1"
	s.port = ln.Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.connections.Add(1)
			s.open.Add(1)
			go func() { defer s.open.Add(-1); s.serveConn(c, cfg) }()
		}
	}()
	return s
}

func (s *testSSHServer) serveConn(c net.Conn, cfg *ssh.ServerConfig) {
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		_ = c.Close()
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go s.serveSession(ch, chReqs)
	}
}

func (s *testSSHServer) serveSession(ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			_ = ssh.Unmarshal(req.Payload, &kv)
			if s.acceptEnv {
				env = append(env, kv.Name+"="+kv.Value)
			}
			_ = req.Reply(s.acceptEnv, nil)
		case "exec":
			var cmd struct{ Command string }
			_ = ssh.Unmarshal(req.Payload, &cmd)
			_ = req.Reply(true, nil)
			s.mu.Lock()
			s.envs = append(s.envs, env)
			s.mu.Unlock()
			p := exec.Command("/bin/sh", "-c", cmd.Command)
			p.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
			p.Stdin, p.Stdout, p.Stderr = ch, ch, ch.Stderr()
			code := 0
			if err := p.Run(); err != nil {
				code = 255
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					if ws, ok := ee.Sys().(syscall.WaitStatus); ok {
						code = ws.ExitStatus()
					}
				}
			}
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
			return
		case "subsystem":
			var sub struct{ Name string }
			_ = ssh.Unmarshal(req.Payload, &sub)
			if sub.Name != "sftp" {
				_ = req.Reply(false, nil)
				continue
			}
			_ = req.Reply(true, nil)
			srv, err := sftp.NewServer(ch)
			if err != nil {
				return
			}
			if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
				return
			}
			return
		default:
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
}

func (s *testSSHServer) lastEnv() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.envs) == 0 {
		return nil
	}
	return s.envs[len(s.envs)-1]
}

// silentServer accepts TCP connections and says nothing for hold, then closes them: a host whose
// sshd is not answering yet.
func silentServer(t *testing.T, hold time.Duration) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { time.Sleep(hold); _ = c.Close() }()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// refusedPort is a local port nothing listens on: connections are refused.
func refusedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

// connMap returns connection inputs for this server.
func (s *testSSHServer) connMap() map[string]any {
	return map[string]any{
		"host": s.addr, "port": float64(s.port), "user": "tester", "privateKey": s.clientKey,
		"hostKey": string(ssh.MarshalAuthorizedKey(s.hostKey)), "dialErrorLimit": 2.0, "perDialTimeout": 5.0,
	}
}
