package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkg/sftp"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// copySource is what a CopyToRemote uploads.
type copySource struct {
	localPath string  // a file or a directory
	text      *string // a StringAsset's text
}

func sourceOf(props resource.PropertyMap) (copySource, error) {
	v, ok := present(props, "source")
	if !ok {
		return copySource{}, errNoSource
	}
	switch {
	case v.IsAsset() && v.AssetValue().IsText():
		text := v.AssetValue().Text
		return copySource{text: &text}, nil
	case v.IsAsset():
		return copySource{localPath: v.AssetValue().Path}, nil
	case v.IsArchive():
		return copySource{localPath: v.ArchiveValue().Path}, nil
	}
	return copySource{}, errNoSource
}

// sourceHash is the content hash of a copy's source ("" when there is none).
func sourceHash(props resource.PropertyMap) string {
	v, ok := present(props, "source")
	switch {
	case !ok:
		return ""
	case v.IsAsset():
		return v.AssetValue().Hash
	case v.IsArchive():
		return v.ArchiveValue().Hash
	}
	return ""
}

// copyToRemote uploads src to remotePath over SFTP on a new SSH connection, as upstream
// remote/copyController.go does:
//
//	source | remote is a dir      | remote missing                | remote is a file
//	dir    | remote/dir           | remote/dir (remote created)   | error
//	dir/   | remote/<each entry>  | remote/<each entry>           | error
//	file   | remote/file          | remote (parents created)      | remote (overwritten)
//	text   | error                | remote (parents created)      | remote (overwritten)
//
// Files are created by the SFTP server with its default mode (0644 under OpenSSH's usual
// umask), whatever the local file's mode: a script that must be executable is run with `sh`.
// Archives such as .tgz are copied as they are, not unpacked.
func copyToRemote(ctx context.Context, conn *connSpec, src copySource, remotePath string,
	log *engineLog, urn resource.URN,
) error {
	if src.text != nil {
		log.debug(urn, "Creating file: %s:%s from text asset", conn.host, remotePath)
	} else {
		log.debug(urn, "Creating file: %s:%s from local file %s", conn.host, remotePath, src.localPath)
	}
	client, err := dial(ctx, conn, log, urn)
	if err != nil {
		return err
	}
	defer client.Close()
	sc, err := sftp.NewClient(client, sftp.UseConcurrentWrites(true))
	if err != nil {
		return err
	}
	defer sc.Close()
	if src.text != nil {
		return copyText(sc, *src.text, remotePath)
	}
	return copyPath(sc, src.localPath, remotePath)
}

func remoteStat(sc *sftp.Client, p string) (fs.FileInfo, error) {
	info, err := sc.Stat(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stat of remote path %s: %w", p, err)
	}
	return info, nil
}

func copyText(sc *sftp.Client, text, dest string) error {
	info, err := remoteStat(sc, dest)
	if err != nil {
		return err
	}
	if info != nil && info.IsDir() {
		return fmt.Errorf("remote path %s is a directory: with a text asset, remotePath must name a file", dest)
	}
	if err := sc.MkdirAll(filepath.Dir(dest)); err != nil {
		return fmt.Errorf("creating the parent directories of %s: %w", dest, err)
	}
	f, err := sc.Create(dest)
	if err != nil {
		return fmt.Errorf("creating remote file %s: %w", dest, err)
	}
	defer f.Close()
	if _, err := f.Write([]byte(text)); err != nil {
		return fmt.Errorf("writing the text to remote path %s: %w", dest, err)
	}
	return nil
}

func copyPath(sc *sftp.Client, source, dest string) error {
	info, err := os.Stat(source)
	if err != nil {
		return err
	}
	destInfo, err := remoteStat(sc, dest)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		switch {
		case destInfo != nil && destInfo.IsDir():
			dest = filepath.Join(dest, filepath.Base(source))
		case destInfo == nil:
			if err := sc.MkdirAll(filepath.Dir(dest)); err != nil {
				return fmt.Errorf("creating the parent directories of %s: %w", dest, err)
			}
		}
		return uploadFile(sc, source, dest)
	}
	if destInfo == nil {
		if err := sc.MkdirAll(dest); err != nil {
			return fmt.Errorf("creating remote directory %s: %w", dest, err)
		}
	}
	if !strings.HasSuffix(source, "/") {
		dest = filepath.Join(dest, filepath.Base(source))
		existing, err := remoteStat(sc, dest)
		if err != nil {
			return err
		}
		if existing != nil && !existing.IsDir() {
			return fmt.Errorf("remote path %s is not a directory", dest)
		}
		if existing == nil {
			if err := sc.Mkdir(dest); err != nil {
				return fmt.Errorf("creating remote directory %s: %w", dest, err)
			}
		}
	}
	return uploadDir(sc, source, dest)
}

func uploadFile(sc *sftp.Client, local, remote string) error {
	in, err := os.Open(local)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := sc.Create(remote)
	if err != nil {
		return fmt.Errorf("creating remote file %s: %w", remote, err)
	}
	defer out.Close()
	if _, err := out.ReadFrom(in); err != nil {
		return fmt.Errorf("copying %s to remote path %s: %w", local, remote, err)
	}
	return nil
}

func uploadDir(sc *sftp.Client, local, remote string) error {
	return fs.WalkDir(os.DirFS(local), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(remote, p)
		if !d.IsDir() {
			return uploadFile(sc, filepath.Join(local, p), target)
		}
		existing, err := remoteStat(sc, target)
		if err != nil {
			return err
		}
		if existing == nil {
			if err := sc.Mkdir(target); err != nil {
				return fmt.Errorf("creating remote directory %s: %w", target, err)
			}
		} else if !existing.IsDir() {
			return fmt.Errorf("remote path %s is not a directory", target)
		}
		return nil
	})
}

// copyFile is the deprecated CopyFile (upstream remote/copyfileController.go): one file to
// exactly remotePath, no parent directories made.
func copyFile(ctx context.Context, conn *connSpec, localPath, remotePath string, log *engineLog, urn resource.URN) error {
	log.debug(urn, "Creating file: %s:%s from local file %s", conn.host, remotePath, localPath)
	in, err := os.Open(localPath)
	if err != nil {
		return err
	}
	defer in.Close()
	client, err := dial(ctx, conn, log, urn)
	if err != nil {
		return err
	}
	defer client.Close()
	sc, err := sftp.NewClient(client)
	if err != nil {
		return err
	}
	defer sc.Close()
	out, err := sc.Create(remotePath)
	if err != nil {
		return err
	}
	_, err = out.ReadFrom(in)
	return err
}
