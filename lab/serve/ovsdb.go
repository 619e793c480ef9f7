package serve

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"labctl/lab/runner"
)

// OVSSchema is the database schema Debian's openvswitch-common installs.
var OVSSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// OVSDB prepares an ovs-host's database in dir (created on first start,
// with the one Open_vSwitch row that `ovs-vsctl init` would add) and then
// becomes ovsdb-server (syscall.Exec: it replaces labctl rather than
// starting a child through lab/runner), so the supervisor's PID is the
// server's own.
func OVSDB(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	db := filepath.Join(dir, "conf.db")
	if _, err := os.Stat(db); errors.Is(err, fs.ErrNotExist) {
		ctx := context.Background()
		if _, err := runner.Default.Command(ctx, "ovsdb-tool", "create", db, OVSSchema).CombinedOutput(); err != nil {
			return err
		}
		init := `["Open_vSwitch",{"op":"insert","table":"Open_vSwitch","row":{}}]`
		if _, err := runner.Default.Command(ctx, "ovsdb-tool", "transact", db, init).CombinedOutput(); err != nil {
			os.Remove(db)
			return err
		}
	}
	// Found on PATH, like ovs-vswitchd, which the supervisor starts the
	// same way.
	bin, err := exec.LookPath("ovsdb-server")
	if err != nil {
		return fmt.Errorf("ovsdb-server not found (install openvswitch-switch): %w", err)
	}
	argv := []string{"ovsdb-server", db,
		"--remote=punix:" + filepath.Join(dir, "db.sock"),
		"--unixctl=" + filepath.Join(dir, "ovsdb-server.ctl"),
		"--pidfile=" + filepath.Join(dir, "ovsdb-server.pid"),
		"--no-chdir", "-vconsole:info"}
	return syscall.Exec(bin, argv, os.Environ())
}
