package config

import (
	"errors"
	"math"
	"strconv"
	"strings"
)

// Byte size units.
const (
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
)

// ByteSize is a size in bytes, written "262144", "256KiB", "10MiB" or
// "1GB". K, M and G (with or without "iB") are binary units; KB, MB and GB
// decimal ones. It is a flag value (Set, String, Type).
type ByteSize int64

var units = []struct {
	suffix string
	size   ByteSize
}{
	// Longest suffixes first, so that "KiB" is not read as "B".
	{"kib", KiB}, {"mib", MiB}, {"gib", GiB},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"k", KiB}, {"m", MiB}, {"g", GiB},
	{"b", 1},
}

// ParseByteSize reads a size; see ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := ByteSize(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.size
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a size such as 262144, 256KiB or 10MiB")
	}
	if n > math.MaxInt64/int64(mult) {
		return 0, errors.New("size too large")
	}
	return ByteSize(n) * mult, nil
}

// String writes the size in the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		size   ByteSize
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(int64(b/u.size), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set parses s into b.
func (b *ByteSize) Set(s string) error {
	v, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Type names the flag value's type in help.
func (*ByteSize) Type() string { return "size" }
