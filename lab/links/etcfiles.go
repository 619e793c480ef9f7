package links

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"labctl/lab/plan"
)

// The files labctl writes under /etc/netns/<ns>/ are recognised by their
// first line, plan.FileHeader (a marker file would itself be bind-mounted
// over /etc by `ip netns exec`, which mounts every file of the directory).
// Anything else there is the user's: labctl never overwrites nor removes
// it, and it never follows a symlink, neither for the files nor for
// /etc/netns and /etc/netns/<ns>: every access goes through directory
// descriptors opened with RESOLVE_NO_SYMLINKS or O_NOFOLLOW.

// ErrForeign is in the error for a file labctl would write but did not.
var ErrForeign = errors.New("labctl did not write it")

// tmpPrefix starts the name a file has while it is written; one a crash
// left behind is removed by RemoveEtc.
const tmpPrefix = ".labctl-tmp."

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC

// openat2 is unix.Openat2; tests replace it to take the fallback path.
var openat2 = unix.Openat2

func foreign(path string) error {
	return fmt.Errorf("%s exists and %w (no %q header): move it away or down the lab that owns it",
		path, ErrForeign, strings.TrimSuffix(plan.FileHeader, "\n"))
}

// openDir opens a directory without following a symlink in any component
// of path; with create it makes the missing ones.
func openDir(path string, create bool) (int, error) {
	path = filepath.Clean(path)
	fd, err := openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: dirFlags, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if errors.Is(err, unix.ENOSYS) { // before Linux 5.6: one component at a time
		fd, err = openWalk(path)
	}
	if errors.Is(err, unix.ENOENT) && create && filepath.Dir(path) != path {
		parent, err := openDir(filepath.Dir(path), true)
		if err != nil {
			return -1, err
		}
		defer unix.Close(parent)
		return openSub(parent, path, true)
	}
	return fd, dirErr(path, err)
}

func openWalk(path string) (int, error) {
	start := "."
	if filepath.IsAbs(path) {
		start = "/"
	}
	fd, err := unix.Open(start, dirFlags, 0)
	for _, c := range strings.Split(path, "/") {
		if err != nil || c == "" || c == "." {
			continue
		}
		var next int
		next, err = unix.Openat(fd, c, dirFlags|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		fd = next
	}
	return fd, err
}

// openSub opens (with create, makes) the directory path's last component
// in parent, not following it if it is a symlink.
func openSub(parent int, path string, create bool) (int, error) {
	name := filepath.Base(path)
	if create {
		if err := unix.Mkdirat(parent, name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, &os.PathError{Op: "mkdir", Path: path, Err: err}
		}
	}
	fd, err := unix.Openat(parent, name, dirFlags|unix.O_NOFOLLOW, 0)
	return fd, dirErr(path, err)
}

func dirErr(path string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s is or passes through a symlink (%w); labctl follows none under %s: move it away or down the lab that owns it", path, err, plan.EtcNetns)
	case errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%s is a symlink or not a directory (%w); labctl follows no symlink under %s: move it away or down the lab that owns it", path, err, plan.EtcNetns)
	}
	return &os.PathError{Op: "open", Path: path, Err: err}
}

// nsDir opens plan.EtcNetns and its directory for ns.
func nsDir(ns string, create bool) (root, dir int, err error) {
	if ns == "" || ns == "." || ns == ".." || strings.Contains(ns, "/") {
		return -1, -1, fmt.Errorf("bad namespace name %q", ns)
	}
	if root, err = openDir(plan.EtcNetns, create); err != nil {
		return -1, -1, err
	}
	if dir, err = openSub(root, filepath.Join(plan.EtcNetns, ns), create); err != nil {
		unix.Close(root)
		return -1, -1, err
	}
	return root, dir, nil
}

// readFile reads a regular file of dir, never through a symlink. If it
// does not start with plan.FileHeader, only that many bytes are read.
func readFile(dir int, name string) (string, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", errors.Join(err, ErrForeign)
	}
	head := make([]byte, len(plan.FileHeader))
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", err
	}
	if err != nil || string(head) != plan.FileHeader {
		return string(head[:n]), nil
	}
	rest, err := io.ReadAll(f)
	return string(head) + string(rest), err
}

// ours reads dir/name if labctl wrote it.
func ours(dir int, name string) (string, bool) {
	b, err := readFile(dir, name)
	return b, err == nil && strings.HasPrefix(b, plan.FileHeader)
}

// oursLeftover tells a temporary file of writeEtc: its name, and what
// was written of the file before a crash.
func oursLeftover(dir int, name string) bool {
	b, err := readFile(dir, name)
	return err == nil && strings.HasPrefix(name, tmpPrefix) && (strings.HasPrefix(b, plan.FileHeader) || strings.HasPrefix(plan.FileHeader, b))
}

// mayWrite reports whether dir/name exists, and an error unless labctl
// may replace it: it is absent or labctl's.
func mayWrite(dir int, path, name string) (exists bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
		return false, nil
	} else if err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return true, fmt.Errorf("%s is a symlink and %w; labctl follows none under %s: move it away or down the lab that owns it",
			path, ErrForeign, plan.EtcNetns)
	}
	if _, ok := ours(dir, name); !ok {
		return true, foreign(path)
	}
	return true, nil
}

func etcPath(s plan.Step) (string, error) {
	name := filepath.Base(s.Path)
	if s.Path != filepath.Join(plan.EtcNetns, s.NS, name) {
		return "", fmt.Errorf("%s is not a file of %s", s.Path, filepath.Join(plan.EtcNetns, s.NS))
	}
	return name, nil
}

// CheckFiles refuses, before anything changes, a plan that would write
// over a file under /etc/netns that labctl did not write, or through a
// symlink.
func CheckFiles(p *plan.Plan) error {
	var errs []error
	for _, s := range p.Steps {
		if s.Op != plan.OpFileWrite {
			continue
		}
		name, err := etcPath(s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		root, dir, err := nsDir(s.NS, false)
		if errors.Is(err, unix.ENOENT) {
			continue // made by up
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		_, err = mayWrite(dir, s.Path, name)
		errs = append(errs, err)
		unix.Close(dir)
		unix.Close(root)
	}
	return errors.Join(errs...)
}

// writeEtc writes a file atomically: a temporary file in the same
// directory, renamed over labctl's own file or into a free name.
func writeEtc(s plan.Step) error {
	name, err := etcPath(s)
	if err != nil {
		return err
	}
	root, dir, err := nsDir(s.NS, true)
	if err != nil {
		return err
	}
	defer unix.Close(root)
	defer unix.Close(dir)
	exists, err := mayWrite(dir, s.Path, name)
	if err != nil {
		return err
	}
	tmp := tmpPrefix + name + "." + strconv.FormatUint(rand.Uint64(), 36)
	fd, err := unix.Openat(dir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return &os.PathError{Op: "create", Path: filepath.Join(filepath.Dir(s.Path), tmp), Err: err}
	}
	f := os.NewFile(uintptr(fd), tmp)
	_, err = f.WriteString(s.Data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && exists {
		err = unix.Renameat(dir, tmp, dir, name)
	} else if err == nil {
		// Not over a file someone put there since mayWrite.
		if err = unix.Renameat2(dir, tmp, dir, name, unix.RENAME_NOREPLACE); errors.Is(err, unix.EEXIST) {
			err = foreign(s.Path)
		}
	}
	if err != nil {
		unix.Unlinkat(dir, tmp, 0)
	}
	return err
}

// removeEtc removes one file of ns if labctl wrote it.
func removeEtc(s plan.Step) error {
	name, err := etcPath(s)
	if err != nil {
		return err
	}
	root, dir, err := nsDir(s.NS, false)
	if err != nil {
		return nil // nothing of labctl's there
	}
	defer unix.Close(root)
	defer unix.Close(dir)
	if _, ok := ours(dir, name); ok {
		if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "remove", Path: s.Path, Err: err}
		}
	}
	return nil
}

// readEtc is the files of ns that labctl wrote, by name.
func readEtc(ns string) map[string]string {
	out := map[string]string{}
	root, dir, err := nsDir(ns, false)
	if err != nil {
		return out
	}
	defer unix.Close(root)
	defer unix.Close(dir)
	for _, f := range []string{"resolv.conf", "hosts"} {
		if b, ok := ours(dir, f); ok {
			out[f] = b
		}
	}
	return out
}

// RemoveEtc removes the files labctl wrote for ns (and temporary ones a
// crash left), and the directory once it is empty; anything else there,
// symlinks included, is left alone.
func RemoveEtc(ns string) error {
	root, dir, err := nsDir(ns, false)
	if err != nil {
		return nil // absent, or not a directory labctl made
	}
	defer unix.Close(root)
	d := os.NewFile(uintptr(dir), filepath.Join(plan.EtcNetns, ns))
	names, err := d.Readdirnames(-1)
	errs := []error{err}
	for _, n := range names {
		if _, ok := ours(dir, n); ok || oursLeftover(dir, n) {
			if err := unix.Unlinkat(dir, n, 0); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, &os.PathError{Op: "remove", Path: filepath.Join(d.Name(), n), Err: err})
			}
		}
	}
	d.Close()
	if err := unix.Unlinkat(root, ns, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, &os.PathError{Op: "remove", Path: d.Name(), Err: err})
	}
	os.Remove(plan.EtcNetns) // only when empty (rmdir follows no symlink): labctl made it
	return errors.Join(errs...)
}
