// Package atomicfile writes files so that readers see either the old file
// or the whole new one, never a part: the content goes to a temporary file
// in the same directory, which is synced and renamed over the target only
// once it is complete.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write creates or replaces path with mode. fill writes the content; if it
// fails, or anything after it does, the temporary file is removed and path
// is left as it was.
func Write(path string, mode os.FileMode, fill func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = fill(tmp); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile is Write with the content in memory.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return Write(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
