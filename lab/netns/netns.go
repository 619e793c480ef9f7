// Package netns is the only package of labctl that switches network
// namespaces. It creates and deletes named namespaces under /run/netns (so
// `ip netns exec` and tcpdump work on them), hands out netlink handles bound
// to a namespace, runs short functions inside one, and finds the processes
// living in one.
package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces are mounted, as iproute2 does.
var Dir = "/run/netns"

// ErrExist is returned by Create when the name is taken.
var ErrExist = errors.New("namespace already exists")

// ErrNotExist is returned when a named namespace is missing.
var ErrNotExist = errors.New("namespace does not exist")

var prepOnce sync.Once
var prepErr error

// prepare makes Dir a shared mount point, as `ip netns add` does, so that a
// namespace mounted later is visible in every mount namespace.
func prepare() error {
	prepOnce.Do(func() {
		if err := os.MkdirAll(Dir, 0o755); err != nil {
			prepErr = err
			return
		}
		err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if errors.Is(err, unix.EINVAL) {
			if err = unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
				err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
			}
		}
		if err != nil {
			prepErr = fmt.Errorf("make %s a shared mount: %w", Dir, err)
		}
	})
	return prepErr
}

// Path is the file a named namespace is mounted on.
func Path(name string) string { return filepath.Join(Dir, name) }

// Create makes a new named network namespace. It never leaves the calling
// goroutine's thread in another namespace.
func Create(name string) error {
	if err := prepare(); err != nil {
		return err
	}
	p := Path(name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) && !Exists(name) {
		// An unmounted file is what a crash between creating the mount
		// point and mounting it leaves: it is no namespace, so replace it.
		if rerr := os.Remove(p); rerr == nil {
			f, err = os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		}
	}
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", name, ErrExist)
		}
		return err
	}
	f.Close()
	err = onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		self := "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
		if err := unix.Mount(self, p, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", p, err)
		}
		return nil
	})
	if err != nil {
		os.Remove(p)
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	return nil
}

// Delete unmounts and removes a named namespace. A missing one is no error.
// The kernel frees the namespace (and every link in it) once no process
// holds it any more.
func Delete(name string) error {
	p := Path(name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// Exists reports whether a named namespace is mounted.
func Exists(name string) bool {
	_, err := ID(name)
	return err == nil
}

// List returns the names under Dir.
func List() ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out, nil
}

// NsID identifies a namespace (the nsfs device and inode).
type NsID struct{ Dev, Ino uint64 }

// ID returns the identity of a named namespace; it fails unless the name
// is a mounted namespace (a leftover empty file is not).
func ID(name string) (NsID, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(Path(name), &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return NsID{}, fmt.Errorf("%s: %w", name, ErrNotExist)
		}
		return NsID{}, err
	}
	if st.Type != unix.NSFS_MAGIC {
		return NsID{}, fmt.Errorf("%s: %w (not mounted)", name, ErrNotExist)
	}
	return statID(Path(name))
}

func statID(p string) (NsID, error) {
	var s unix.Stat_t
	if err := unix.Stat(p, &s); err != nil {
		return NsID{}, err
	}
	return NsID{Dev: s.Dev, Ino: s.Ino}, nil
}

// Open returns a handle (an fd) on a named namespace; close it when done.
func Open(name string) (vns.NsHandle, error) {
	h, err := vns.GetFromPath(Path(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return -1, fmt.Errorf("%s: %w", name, ErrNotExist)
		}
		return -1, err
	}
	return h, nil
}

// Handle returns a route netlink handle bound to a named namespace. It can
// be used from any goroutine; Close it when done.
func Handle(name string) (*netlink.Handle, error) {
	ns, err := Open(name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	return h, nil
}

// Do runs fn on an OS thread inside the named namespace: for sysctls,
// ioctls and sockets that must be created there. Goroutines fn starts do
// not inherit the namespace.
func Do(name string, fn func() error) error {
	ns, err := Open(name)
	if err != nil {
		return err
	}
	defer ns.Close()
	return onFreshThread(func() error {
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter %s: %w", name, err)
		}
		return fn()
	})
}

// Dial connects to addr from inside the named namespace with d: the
// socket is created there, so it lives in that namespace's stack while the
// caller stays where it is.
func Dial(ctx context.Context, name string, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(name, func() error {
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Temp runs fn inside a new, unnamed namespace that disappears afterwards
// (used by doctor to probe kernel features without leaving anything).
func Temp(fn func() error) error {
	return onFreshThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		return fn()
	})
}

// onFreshThread runs fn on a locked thread and puts the thread back into
// the caller's namespace afterwards. If that fails the thread stays locked,
// so the Go runtime discards it instead of reusing a thread in the wrong
// namespace (the CNI pattern).
func onFreshThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(origin)
		ferr := fn()
		if err := unix.Setns(origin, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("return to origin namespace: %w", err))
			return // thread stays locked and dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Pids maps each namespace ID to the processes whose network namespace it
// is, scanning /proc once.
func Pids(ids map[NsID]bool) (map[NsID][]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := map[NsID][]int{}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := statID("/proc/" + e.Name() + "/ns/net")
		if err != nil {
			continue // gone, or a kernel thread
		}
		if ids[id] {
			out[id] = append(out[id], pid)
		}
	}
	return out, nil
}

// Signal sends sig to pid; a process that is already gone is no error.
func Signal(pid int, sig syscall.Signal) error {
	err := syscall.Kill(pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Kill ends every process living in the given namespaces: SIGTERM, then
// SIGKILL for those still there after grace. It signals by PID only.
func Kill(names []string, grace time.Duration) error {
	ids := map[NsID]bool{}
	for _, n := range names {
		if id, err := ID(n); err == nil {
			ids[id] = true
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var errs []error
	deadline := time.Now().Add(grace)
	for sig := syscall.SIGTERM; ; sig = syscall.SIGKILL {
		found, err := Pids(ids)
		if err != nil {
			return err
		}
		if len(found) == 0 {
			return errors.Join(errs...)
		}
		for _, pids := range found {
			for _, pid := range pids {
				if err := Signal(pid, sig); err != nil {
					errs = append(errs, fmt.Errorf("signal %d: %w", pid, err))
				}
			}
		}
		if sig == syscall.SIGKILL {
			// Wait (briefly) for the kernel to reap them, so the namespaces go.
			for i := 0; i < 50; i++ {
				if f, _ := Pids(ids); len(f) == 0 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			return errors.Join(errs...)
		}
		for time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			if f, _ := Pids(ids); len(f) == 0 {
				return errors.Join(errs...)
			}
		}
	}
}
