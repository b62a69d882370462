package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pkg/sftp"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
)

// copySource is what a CopyToRemote (or CopyFile) uploads.
type copySource struct {
	localPath string  // a file or a directory
	text      *string // a StringAsset's text
	hash      string  // content hash (assets/archives); empty for CopyFile
}

func sourceOf(typ string, props resource.PropertyMap) (copySource, error) {
	if typ == typeCopyFile {
		p, ok, err := getString(props, "localPath")
		if err != nil || !ok {
			return copySource{}, fmt.Errorf("localPath: %v", orMissing(err))
		}
		return copySource{localPath: p}, nil
	}
	v, ok := present(props, "source")
	if !ok {
		return copySource{}, errors.New("missing required property 'source'")
	}
	switch {
	case v.IsAsset():
		a := v.AssetValue()
		_ = a.EnsureHash()
		switch {
		case a.IsPath():
			return copySource{localPath: a.Path, hash: a.Hash}, nil
		case a.IsText():
			t := a.Text
			return copySource{text: &t, hash: a.Hash}, nil
		}
		return copySource{}, errors.New("source asset must be a FileAsset or a StringAsset")
	case v.IsArchive():
		a := v.ArchiveValue()
		_ = a.EnsureHash()
		if a.IsPath() {
			return copySource{localPath: a.Path, hash: a.Hash}, nil
		}
		return copySource{}, errors.New("source archive must be a FileArchive (a path to a file or directory)")
	}
	return copySource{}, errors.New("source must be an asset or an archive")
}

func orMissing(err error) error {
	if err == nil {
		return errors.New("missing required property")
	}
	return err
}

// copyToRemote uploads src to remotePath over SFTP on a new SSH connection.
//
// Like upstream:
//
//	source | remote is a dir      | remote missing            | remote is a file
//	dir    | remote/dir           | remote/dir (both created) | error
//	dir/   | remote/<each entry>  | remote/<each entry>       | error
//	file   | remote/file          | remote                    | remote (overwritten)
//
// A StringAsset is written to remotePath, which must not be a directory. Archives
// such as .tgz are copied as they are, not unpacked. File permission bits are kept.
func copyToRemote(ctx context.Context, conn *connSpec, src copySource, remotePath string,
	log *engineLog, urn resource.URN,
) error {
	client, err := dial(ctx, conn, log, urn)
	if err != nil {
		return err
	}
	defer client.Close()
	stop := context.AfterFunc(ctx, func() { _ = client.Close() })
	defer stop()

	sc, err := sftp.NewClient(client.Client)
	if err != nil {
		return fmt.Errorf("starting sftp on %s: %w", conn, err)
	}
	defer sc.Close()

	dest := remotePath
	destInfo, err := remoteStat(sc, dest)
	if err != nil {
		return err
	}

	if src.text != nil {
		if destInfo != nil && destInfo.IsDir() {
			return fmt.Errorf("remote path %s is a directory; with a text asset remotePath must be a file path", dest)
		}
		f, err := sc.Create(dest)
		if err != nil {
			return fmt.Errorf("creating remote file %s: %w", dest, err)
		}
		if _, err := f.Write([]byte(*src.text)); err != nil {
			_ = f.Close()
			return fmt.Errorf("writing remote file %s: %w", dest, err)
		}
		return f.Close()
	}

	info, err := os.Stat(src.localPath)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if !info.IsDir() {
		if destInfo != nil && destInfo.IsDir() {
			dest = path.Join(dest, filepath.Base(src.localPath))
		}
		return uploadFile(sc, src.localPath, dest, info.Mode())
	}

	if destInfo != nil && !destInfo.IsDir() {
		return fmt.Errorf("remote path %s exists but is not a directory", dest)
	}
	if destInfo == nil {
		if err := sc.Mkdir(dest); err != nil {
			return fmt.Errorf("creating remote directory %s: %w", dest, err)
		}
	}
	if !strings.HasSuffix(src.localPath, "/") {
		dest = path.Join(dest, filepath.Base(filepath.Clean(src.localPath)))
	}
	return uploadDir(sc, src.localPath, dest)
}

func remoteStat(sc *sftp.Client, p string) (fs.FileInfo, error) {
	info, err := sc.Stat(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("stat remote path %s: %w", p, err)
	}
	return info, nil
}

func uploadFile(sc *sftp.Client, local, remote string, mode fs.FileMode) error {
	in, err := os.Open(local)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := sc.OpenFile(remote, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return fmt.Errorf("creating remote file %s: %w", remote, err)
	}
	if _, err := out.ReadFrom(in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copying %s to remote path %s: %w", local, remote, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("closing remote file %s: %w", remote, err)
	}
	if err := sc.Chmod(remote, mode.Perm()); err != nil {
		return fmt.Errorf("chmod remote file %s: %w", remote, err)
	}
	return nil
}

func uploadDir(sc *sftp.Client, local, remote string) error {
	return filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(local, p)
		if err != nil {
			return err
		}
		target := remote
		if rel != "." {
			target = path.Join(remote, filepath.ToSlash(rel))
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if !info.Mode().IsRegular() {
				return nil // sockets, devices, symlinks: skipped
			}
			return uploadFile(sc, p, target, info.Mode())
		}
		existing, err := remoteStat(sc, target)
		if err != nil {
			return err
		}
		if existing == nil {
			if err := sc.Mkdir(target); err != nil {
				return fmt.Errorf("creating remote directory %s: %w", target, err)
			}
			if err := sc.Chmod(target, info.Mode().Perm()); err != nil {
				return fmt.Errorf("chmod remote directory %s: %w", target, err)
			}
		} else if !existing.IsDir() {
			return fmt.Errorf("remote path %s exists but is not a directory", target)
		}
		return nil
	})
}
