package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// engineLog sends diagnostics to the engine's Log RPC. Without an engine (unit
// tests) it writes to stderr.
type engineLog struct {
	mu     sync.Mutex
	conn   *grpc.ClientConn
	client pulumirpc.EngineClient
	quiet  bool // without an engine: drop messages instead of writing to stderr
}

func (l *engineLog) connect(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil || addr == "" {
		return nil
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()), rpcutil.GrpcChannelOptions())
	if err != nil {
		return fmt.Errorf("connecting to the engine at %s: %w", addr, err)
	}
	l.conn, l.client = conn, pulumirpc.NewEngineClient(conn)
	return nil
}

// send logs msg for urn. Ephemeral messages are status lines (upstream's LogStatus).
func (l *engineLog) send(sev pulumirpc.LogSeverity, urn resource.URN, msg string, ephemeral bool) {
	if l == nil {
		return
	}
	l.mu.Lock()
	client := l.client
	l.mu.Unlock()
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if client == nil {
		if l.quiet {
			return
		}
		fmt.Fprintf(os.Stderr, "[%s] %s: %s\n", sev, urn, msg)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = client.Log(ctx, &pulumirpc.LogRequest{
		Severity: sev, Message: msg, Urn: string(urn), Ephemeral: ephemeral,
	})
}

func (l *engineLog) status(urn resource.URN, format string, args ...any) {
	l.send(pulumirpc.LogSeverity_INFO, urn, fmt.Sprintf(format, args...), true)
}

func (l *engineLog) warn(urn resource.URN, format string, args ...any) {
	l.send(pulumirpc.LogSeverity_WARNING, urn, fmt.Sprintf(format, args...), false)
}

func (l *engineLog) error(urn resource.URN, format string, args ...any) {
	l.send(pulumirpc.LogSeverity_ERROR, urn, fmt.Sprintf(format, args...), false)
}

func (l *engineLog) debug(urn resource.URN, format string, args ...any) {
	l.send(pulumirpc.LogSeverity_DEBUG, urn, fmt.Sprintf(format, args...), false)
}

// lineWriter forwards complete lines of a command's output to the engine as
// status messages; a trailing partial line is sent by flush.
type lineWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	out func(line string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := string(w.buf.Next(i + 1))
		w.out(strings.TrimRight(line, "\r\n"))
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		w.out(strings.TrimRight(w.buf.String(), "\r\n"))
		w.buf.Reset()
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (stdout and stderr
// both feed the combined buffer used in error messages).
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
