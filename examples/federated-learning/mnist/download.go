package mnist

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/shareflow/shareflow/internal/atomicfile"
)

// File is one file to download and the SHA-256 it must have.
type File struct {
	// Name is the file name, appended to the base URL and used in the
	// destination directory. It must be a plain name without slashes.
	Name string
	// SHA256 is the expected digest, 64 hexadecimal digits.
	SHA256 string
	// Size is the expected length in bytes, or 0 if unknown. When set, a
	// body of any other length is rejected before the digest is checked.
	Size int64
}

// MaxDownloadSize caps the bytes read for a File whose Size is 0.
const MaxDownloadSize = 1 << 28

// MNISTBaseURL is the MNIST mirror TensorFlow uses.
const MNISTBaseURL = "https://storage.googleapis.com/cvdf-datasets/mnist/"

// MNISTFiles are the four gzipped MNIST files with their published sizes
// and SHA-256 digests.
var MNISTFiles = []File{
	{Name: TrainImagesFile + ".gz", SHA256: "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", Size: 9912422},
	{Name: TrainLabelsFile + ".gz", SHA256: "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", Size: 28881},
	{Name: TestImagesFile + ".gz", SHA256: "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", Size: 1648877},
	{Name: TestLabelsFile + ".gz", SHA256: "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", Size: 4542},
}

// FashionMNISTBaseURL is Zalando's S3 bucket for Fashion-MNIST (the TLS
// endpoint; the bucket's website endpoint serves plain HTTP only).
const FashionMNISTBaseURL = "https://fashion-mnist.s3.eu-central-1.amazonaws.com/"

// FashionMNISTFiles are the four gzipped Fashion-MNIST files with their
// published sizes and SHA-256 digests.
var FashionMNISTFiles = []File{
	{Name: TrainImagesFile + ".gz", SHA256: "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", Size: 26421880},
	{Name: TrainLabelsFile + ".gz", SHA256: "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", Size: 29515},
	{Name: TestImagesFile + ".gz", SHA256: "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", Size: 4422102},
	{Name: TestLabelsFile + ".gz", SHA256: "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", Size: 5148},
}

// Sentinel errors of Download, wrapped in a *DownloadError.
var (
	// ErrHTTPStatus means the server answered with a status other than 200.
	ErrHTTPStatus = errors.New("mnist: unexpected HTTP status")
	// ErrChecksum means the body's SHA-256 differs from File.SHA256.
	ErrChecksum = errors.New("mnist: SHA-256 mismatch")
	// ErrSize means the body is shorter or longer than expected.
	ErrSize = errors.New("mnist: wrong download size")
	// ErrBadFile means a File entry itself is invalid.
	ErrBadFile = errors.New("mnist: invalid file entry")
)

// DownloadError reports the failure to fetch one file.
type DownloadError struct {
	// URL is the address fetched (empty if the entry was rejected first).
	URL string
	// File is the destination path.
	File string
	// Err says what failed.
	Err error
}

// Error implements error.
func (e *DownloadError) Error() string {
	if e.URL == "" {
		return "mnist: download " + e.File + ": " + e.Err.Error()
	}
	return "mnist: download " + e.URL + " to " + e.File + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *DownloadError) Unwrap() error { return e.Err }

// Download fetches each file from baseURL into dir, like TF Encrypted's
// download.py. Every file's SHA-256 (and size, when given) is checked before
// it is moved into place: a body is written to a temporary file in dir, which
// is renamed only once verified, so dir never holds a partial or corrupt
// file under a final name. A file already present in dir with the right
// digest is not fetched again. client nil means http.DefaultClient; ctx bounds
// the whole operation. Files are fetched in order and the first failure is
// returned.
func Download(ctx context.Context, client *http.Client, baseURL string, dir string, files []File) error {
	if client == nil {
		client = http.DefaultClient
	}
	base, err := url.Parse(baseURL)
	if err != nil {
		return fmt.Errorf("mnist: download: base URL %q: %w", baseURL, err)
	}
	if base.Scheme != "http" && base.Scheme != "https" {
		return fmt.Errorf("mnist: download: base URL %q: scheme must be http or https", baseURL)
	}
	for _, f := range files {
		dst := filepath.Join(dir, f.Name)
		if err := checkFile(f); err != nil {
			return &DownloadError{File: dst, Err: err}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mnist: download: %w", err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := filepath.Join(dir, f.Name)
		if ok, err := haveFile(dst, f); err != nil {
			return &DownloadError{File: dst, Err: err}
		} else if ok {
			continue
		}
		u := base.JoinPath(f.Name).String()
		if err := fetch(ctx, client, u, dst, f); err != nil {
			return &DownloadError{URL: u, File: dst, Err: err}
		}
	}
	return nil
}

// checkFile validates one File entry.
func checkFile(f File) error {
	if f.Name == "" || f.Name == "." || f.Name == ".." || strings.ContainsAny(f.Name, `/\`) {
		return fmt.Errorf("%w: name %q must be a plain file name", ErrBadFile, f.Name)
	}
	if d, err := hex.DecodeString(f.SHA256); err != nil || len(d) != sha256.Size {
		return fmt.Errorf("%w: SHA256 %q of %s is not 64 hexadecimal digits", ErrBadFile, f.SHA256, f.Name)
	}
	if f.Size < 0 {
		return fmt.Errorf("%w: Size %d of %s is negative", ErrBadFile, f.Size, f.Name)
	}
	return nil
}

// haveFile reports whether path already exists with f's digest.
func haveFile(path string, f File) (bool, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return false, err
	}
	return strings.EqualFold(hex.EncodeToString(h.Sum(nil)), f.SHA256), nil
}

// fetch downloads u to dst via a verified temporary file.
func fetch(ctx context.Context, client *http.Client, u, dst string, f File) (err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	// Ask for the bytes as stored: with an explicit Accept-Encoding the
	// transport does not transparently gunzip a body that a server labels
	// Content-Encoding: gzip, which would break the checksum.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: %s", ErrHTTPStatus, resp.Status)
	}
	limit := int64(MaxDownloadSize)
	if f.Size > 0 {
		limit = f.Size
		if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
			return fmt.Errorf("%w: server announces %d bytes, want %d", ErrSize, resp.ContentLength, f.Size)
		}
	}

	return atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(resp.Body, limit+1))
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: body ended after %d bytes (short read): %v", ErrSize, n, err)
			}
			return fmt.Errorf("reading body after %d bytes: %w", n, err)
		}
		switch {
		case n > limit:
			return fmt.Errorf("%w: body exceeds %d bytes", ErrSize, limit)
		case f.Size > 0 && n < f.Size:
			return fmt.Errorf("%w: short read, got %d of %d bytes", ErrSize, n, f.Size)
		}
		if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, f.SHA256) {
			return fmt.Errorf("%w: got %s, want %s", ErrChecksum, got, strings.ToLower(f.SHA256))
		}
		return nil
	})
}
