// Package mnist reads, writes, fetches and splits MNIST-format image data
// sets for the federated-learning example.
//
// The IDX format (LeCun et al.) stores a big-endian magic number, the
// dimensions, and then unsigned bytes: images files (magic 0x00000803) hold
// N × Rows × Cols pixels, labels files (magic 0x00000801) hold N class
// labels. DecodeImages and DecodeLabels read either form, gzipped or not
// (detected by the gzip magic bytes), check every header field against sane
// limits before reading the payload, and report problems as a *FileError
// that names the file and wraps a sentinel such as ErrTruncated or ErrMagic.
// DecodeImageRange and DecodeLabelRange read only examples [from, to): a
// plain file that can seek is read only there, a gzipped one is
// decompressed to its end with the other examples discarded as they pass;
// either way the whole file is checked. EncodeImages and EncodeLabels
// write the format back.
//
// A Dataset pairs images, scaled to [0, 1], with labels. Load reads the
// standard four files (train-images-idx3-ubyte and so on, plain or .gz) from
// a directory; Shard and Split cut a set into disjoint parts, one per data
// owner:
//
//	train, test, err := mnist.Load("data")        // after Download
//	train, test, err := mnist.Embedded()          // no download needed
//	shards, err := train.Split(3)                 // one per data owner
//
// A player on its own host loads only its part: LoadShard(dir, i, n) gives
// a data owner the examples train.Shard(i, n) holds without keeping the
// rest of the training set, and LoadTest gives the model owner the test
// set alone:
//
//	shard, err := mnist.LoadShard("data", 1, 3)  // data-owner-1 of 3
//	test, err := mnist.LoadTest("data")          // the model owner
//
// Embedded returns a small real data set compiled into the package: a
// class-balanced subset of Fashion-MNIST (6,000 training and 1,000 test
// images; MIT licence, © 2017 Zalando SE). embedded/README.md gives its
// provenance and checksums; internal/makeembedded rebuilds it from Debian's
// dataset-fashion-mnist package (go generate).
//
// Download fetches files over HTTP(S), checks each one's SHA-256 and writes
// it atomically; MNISTFiles and FashionMNISTFiles list the published files
// and digests for MNISTBaseURL and FashionMNISTBaseURL.
package mnist
