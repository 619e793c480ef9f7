package links

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"labctl/lab/plan"
)

// These tests need no lab: /etc/netns is a temporary directory.

const ns = "lab-h1"

func etcRoot(t *testing.T) string {
	t.Helper()
	old := plan.EtcNetns
	plan.EtcNetns = filepath.Join(t.TempDir(), "netns")
	t.Cleanup(func() { plan.EtcNetns = old })
	return plan.EtcNetns
}

func fileStep(name, data string) plan.Step {
	return plan.Step{Phase: plan.PhaseFiles, Op: plan.OpFileWrite, Node: "h1", NS: ns,
		Path: filepath.Join(plan.EtcNetns, ns, name), Data: data}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func content(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func isLink(path string) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

const ourData = plan.FileHeader + "nameserver 10.0.0.53\n"

// withFallback runs f with openat2, then as on a kernel without it.
func withFallback(t *testing.T, f func(t *testing.T)) {
	t.Run("openat2", f)
	t.Run("no-openat2", func(t *testing.T) {
		openat2 = func(int, string, *unix.OpenHow) (int, error) { return -1, unix.ENOSYS }
		t.Cleanup(func() { openat2 = unix.Openat2 })
		f(t)
	})
}

func TestEtcForeignFileRefused(t *testing.T) {
	withFallback(t, func(t *testing.T) {
		root := etcRoot(t)
		path := filepath.Join(root, ns, "resolv.conf")
		const mine = "nameserver 192.0.2.1\n"
		write(t, path, mine)
		s := fileStep("resolv.conf", ourData)

		err := New().Apply(context.Background(), s)
		if err == nil || !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), path+" exists and labctl did not write it") || !strings.Contains(err.Error(), "move it away") {
			t.Fatalf("write over a foreign file: %v", err)
		}
		if err := CheckFiles(&plan.Plan{Steps: []plan.Step{s}}); !errors.Is(err, ErrForeign) {
			t.Errorf("CheckFiles of a write over a foreign file: %v", err)
		}
		if got := content(t, path); got != mine {
			t.Errorf("foreign file changed to %q", got)
		}
		if got := names(t, filepath.Dir(path)); len(got) != 1 {
			t.Errorf("directory holds %v, want only resolv.conf", got)
		}
		if _, ok := readEtc(ns)["resolv.conf"]; ok {
			t.Error("observe reports a foreign file as the lab's")
		}
		// Neither removal touches it.
		del := s
		del.Op = plan.OpFileDel
		if err := New().Apply(context.Background(), del); err != nil {
			t.Fatal(err)
		}
		if err := RemoveEtc(ns); err != nil {
			t.Fatal(err)
		}
		if got := content(t, path); got != mine {
			t.Errorf("after removal the foreign file is %q", got)
		}
	})
}

func TestEtcSymlinkedFileRefused(t *testing.T) {
	withFallback(t, func(t *testing.T) {
		root := etcRoot(t)
		target := filepath.Join(filepath.Dir(root), "target")
		// The target even looks like labctl's: a symlink is never ours.
		write(t, target, ourData)
		path := filepath.Join(root, ns, "hosts")
		write(t, filepath.Join(root, ns, "resolv.conf"), ourData)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		s := fileStep("hosts", plan.FileHeader+"127.0.0.1 localhost\n")

		err := New().Apply(context.Background(), s)
		if err == nil || !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), path+" is a symlink") {
			t.Fatalf("write through a symlink: %v", err)
		}
		if err := CheckFiles(&plan.Plan{Steps: []plan.Step{s}}); !errors.Is(err, ErrForeign) {
			t.Errorf("CheckFiles of a write through a symlink: %v", err)
		}
		if got := content(t, target); got != ourData || !isLink(path) {
			t.Errorf("target is %q (symlink kept: %v)", got, isLink(path))
		}
		if got := readEtc(ns); len(got) != 1 || got["resolv.conf"] != ourData {
			t.Errorf("observe reads %v, want only resolv.conf", got)
		}
		if err := RemoveEtc(ns); err != nil {
			t.Fatal(err)
		}
		if !isLink(path) || content(t, target) != ourData {
			t.Error("RemoveEtc removed the symlink or its target")
		}
		if got := names(t, filepath.Join(root, ns)); len(got) != 1 || got[0] != "hosts" {
			t.Errorf("after RemoveEtc the directory holds %v, want only the symlink", got)
		}
	})
}

func TestEtcSymlinkedDirRefused(t *testing.T) {
	for _, link := range []string{"ns", "root"} {
		t.Run(link, func(t *testing.T) {
			withFallback(t, func(t *testing.T) {
				root := etcRoot(t)
				elsewhere := filepath.Join(filepath.Dir(root), "elsewhere")
				write(t, filepath.Join(elsewhere, "hosts"), ourData)
				if link == "ns" {
					if err := os.MkdirAll(root, 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.Symlink(elsewhere, filepath.Join(root, ns)); err != nil {
						t.Fatal(err)
					}
				} else {
					write(t, filepath.Join(elsewhere, ns, "hosts"), ourData)
					if err := os.Symlink(elsewhere, root); err != nil {
						t.Fatal(err)
					}
				}
				linked := map[string]string{"ns": filepath.Join(root, ns), "root": root}[link]
				s := fileStep("resolv.conf", ourData)
				err := New().Apply(context.Background(), s)
				if err == nil || !strings.Contains(err.Error(), ": "+linked+" is") || !strings.Contains(err.Error(), "symlink") {
					t.Fatalf("write into a symlinked directory: %v", err)
				}
				if err := CheckFiles(&plan.Plan{Steps: []plan.Step{s}}); err == nil {
					t.Error("CheckFiles accepts a write into a symlinked directory")
				}
				if got := readEtc(ns); len(got) != 0 {
					t.Errorf("observe reads %v through a symlinked directory", got)
				}
				if err := RemoveEtc(ns); err != nil {
					t.Fatal(err)
				}
				kept := []string{filepath.Join(elsewhere, "hosts")}
				if link == "root" {
					kept = append(kept, filepath.Join(elsewhere, ns, "hosts"))
				}
				for _, p := range kept {
					if _, err := os.Lstat(p); err != nil {
						t.Errorf("RemoveEtc removed %s through a symlink", p)
					}
				}
				if _, err := os.Lstat(filepath.Join(elsewhere, "resolv.conf")); err == nil {
					t.Error("resolv.conf written through a symlinked directory")
				}
				if _, err := os.Lstat(filepath.Join(elsewhere, ns, "resolv.conf")); err == nil {
					t.Error("resolv.conf written through a symlinked /etc/netns")
				}
				if !isLink(linked) {
					t.Errorf("%s is no longer a symlink", linked)
				}
			})
		})
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestEtcOwnFileReplacedAtomically(t *testing.T) {
	withFallback(t, func(t *testing.T) {
		root := etcRoot(t)
		path := filepath.Join(root, ns, "resolv.conf")
		d := New()
		if err := d.Apply(context.Background(), fileStep("resolv.conf", ourData)); err != nil {
			t.Fatal(err)
		}
		if got := content(t, path); got != ourData {
			t.Fatalf("written %q", got)
		}
		// A reader holding the old file keeps reading the old file: the
		// new one is renamed into place, never written over it.
		old, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		ino := inode(t, path)
		next := plan.FileHeader + "nameserver 10.0.0.54\n"
		if err := CheckFiles(&plan.Plan{Steps: []plan.Step{fileStep("resolv.conf", next)}}); err != nil {
			t.Fatalf("CheckFiles of labctl's own file: %v", err)
		}
		if err := d.Apply(context.Background(), fileStep("resolv.conf", next)); err != nil {
			t.Fatal(err)
		}
		if got := content(t, path); got != next {
			t.Fatalf("rewritten %q", got)
		}
		if inode(t, path) == ino {
			t.Error("labctl's file was written over in place, not replaced")
		}
		b := make([]byte, 100)
		if n, _ := old.Read(b); string(b[:n]) != ourData {
			t.Errorf("a reader of the old file read %q", b[:n])
		}
		if got := names(t, filepath.Dir(path)); len(got) != 1 {
			t.Errorf("directory holds %v, want only resolv.conf", got)
		}
		if got := readEtc(ns); got["resolv.conf"] != next {
			t.Errorf("observe reads %v", got)
		}
		if err := RemoveEtc(ns); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(root); err == nil {
			t.Errorf("RemoveEtc left %v", names(t, root))
		}
	})
}

// A crash between the temporary file and the rename leaves the temporary
// file; down removes it, and only such files.
func TestRemoveEtcLeftovers(t *testing.T) {
	root := etcRoot(t)
	dir := filepath.Join(root, ns)
	write(t, filepath.Join(dir, "hosts"), ourData)
	write(t, filepath.Join(dir, ".labctl-tmp.hosts.1"), "")
	write(t, filepath.Join(dir, ".labctl-tmp.hosts.2"), plan.FileHeader[:5])
	write(t, filepath.Join(dir, ".labctl-tmp.resolv.conf.3"), ourData[:len(plan.FileHeader)+4])
	write(t, filepath.Join(dir, ".labctl-tmp.mine"), "user data\n")
	write(t, filepath.Join(dir, "nsswitch.conf"), "hosts: files\n")
	if err := RemoveEtc(ns); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(t, dir), " "); got != ".labctl-tmp.mine nsswitch.conf" {
		t.Errorf("after RemoveEtc the directory holds %s", got)
	}
}
