package mnist

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// fileServer serves body under /data/<name>; names not in files get 404.
// Special behaviours are keyed by name.
type fileServer struct {
	files    map[string][]byte
	requests atomic.Int64
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	name := filepath.Base(r.URL.Path)
	body, ok := s.files[name]
	if !ok || filepath.Dir(r.URL.Path) != "/data" {
		http.NotFound(w, r)
		return
	}
	switch name {
	case "truncated.gz":
		// Promise the whole body, send half, and let the server drop the
		// connection.
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:len(body)/2])
		return
	case "chunked.gz":
		// No Content-Length: the client only learns the size at the end.
		w.(http.Flusher).Flush()
	default:
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	_, _ = w.Write(body)
}

// dirNames lists the names in dir.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestDownload(t *testing.T) {
	a := []byte("first file, gzipped or not, it does not matter here")
	b := make([]byte, 100_000)
	for i := range b {
		b[i] = byte(i * 7)
	}
	srv := &fileServer{files: map[string][]byte{
		"a.gz": a, "b.gz": b, "truncated.gz": b, "chunked.gz": b,
	}}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	base := ts.URL + "/data/"
	ctx := context.Background()

	t.Run("success and skip", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		files := []File{{Name: "a.gz", SHA256: sum(a)}, {Name: "b.gz", SHA256: sum(b), Size: int64(len(b))}}
		require.NoError(t, Download(ctx, ts.Client(), base, dir, files))
		got, err := os.ReadFile(filepath.Join(dir, "a.gz"))
		require.NoError(t, err)
		assert.Equal(t, a, got)
		got, err = os.ReadFile(filepath.Join(dir, "b.gz"))
		require.NoError(t, err)
		assert.Equal(t, b, got)
		assert.ElementsMatch(t, []string{"a.gz", "b.gz"}, dirNames(t, dir))

		// A second run finds both files in place and fetches nothing.
		before := srv.requests.Load()
		require.NoError(t, Download(ctx, ts.Client(), base, dir, files))
		assert.Equal(t, before, srv.requests.Load())

		// A damaged file is fetched again.
		require.NoError(t, os.WriteFile(filepath.Join(dir, "a.gz"), []byte("junk"), 0o644))
		require.NoError(t, Download(ctx, ts.Client(), base, dir, files))
		assert.Equal(t, before+1, srv.requests.Load())
		got, err = os.ReadFile(filepath.Join(dir, "a.gz"))
		require.NoError(t, err)
		assert.Equal(t, a, got)
	})

	wrong := sum([]byte("something else"))
	tests := []struct {
		name     string
		file     File
		want     error
		contains []string
	}{
		{"bad checksum", File{Name: "a.gz", SHA256: wrong}, ErrChecksum, []string{sum(a), wrong, "a.gz"}},
		{"not found", File{Name: "missing.gz", SHA256: wrong}, ErrHTTPStatus, []string{"404", base + "missing.gz"}},
		{"truncated body", File{Name: "truncated.gz", SHA256: sum(b)}, ErrSize, []string{"short read", "truncated.gz"}},
		{"truncated body, size known", File{Name: "truncated.gz", SHA256: sum(b), Size: int64(len(b))}, ErrSize, []string{"truncated.gz"}},
		{"announced size differs", File{Name: "b.gz", SHA256: sum(b), Size: int64(len(b)) + 1}, ErrSize, []string{"announces 100000 bytes, want 100001"}},
		{"chunked body too long", File{Name: "chunked.gz", SHA256: sum(b), Size: 10}, ErrSize, []string{"exceeds 10 bytes"}},
		{"chunked body too short", File{Name: "chunked.gz", SHA256: sum(b), Size: int64(len(b)) + 5}, ErrSize, []string{"got 100000 of 100005 bytes"}},
		{"name with slash", File{Name: "../evil", SHA256: wrong}, ErrBadFile, []string{"plain file name"}},
		{"bad digest", File{Name: "a.gz", SHA256: "abc"}, ErrBadFile, []string{`"abc"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := Download(ctx, ts.Client(), base, dir, []File{tc.file})
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.want)
			var de *DownloadError
			require.ErrorAs(t, err, &de)
			assert.Equal(t, filepath.Join(dir, tc.file.Name), de.File)
			for _, s := range tc.contains {
				assert.Contains(t, err.Error(), s)
			}
			// Nothing, not even a temporary file, is left behind.
			assert.Empty(t, dirNames(t, dir))
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := Download(cctx, ts.Client(), base, t.TempDir(), []File{{Name: "a.gz", SHA256: sum(a)}})
		assert.ErrorIs(t, err, context.Canceled)
	})
	t.Run("bad base URL", func(t *testing.T) {
		err := Download(ctx, ts.Client(), "ftp://example.invalid/", t.TempDir(), nil)
		assert.ErrorContains(t, err, "scheme must be http or https")
	})
}

func TestPublishedFileLists(t *testing.T) {
	for name, files := range map[string][]File{"MNIST": MNISTFiles, "Fashion-MNIST": FashionMNISTFiles} {
		require.Len(t, files, 4, name)
		for _, f := range files {
			assert.NoError(t, checkFile(f), name)
			assert.Positive(t, f.Size, name)
		}
	}
}
