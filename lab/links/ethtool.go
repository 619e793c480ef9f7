package links

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"

	"labctl/lab/netns"
)

// ethtoolValue is struct ethtool_value of <linux/ethtool.h>.
type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with ifr_data, the pointer SIOCETHTOOL reads:
// the name, then the union, padded to the 40 bytes of struct ifreq on
// 64-bit platforms (on 32-bit ones it is 32; the kernel reads only those).
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// SetTxChecksum switches TX checksum offload of iface in ns on or off
// (what `ethtool -K IF tx off` does), through the legacy ETHTOOL_STXCSUM
// ioctl, which the kernel maps onto the checksum features (NETIF_F_CSUM_MASK:
// tx-checksum-ip-generic on veth). Features that depend on it (TSO, ...)
// follow, as with ethtool.
func SetTxChecksum(ns, iface string, on bool) error {
	v := ethtoolValue{cmd: unix.ETHTOOL_STXCSUM}
	if on {
		v.data = 1
	}
	if err := ethtool(ns, iface, &v); err != nil {
		return fmt.Errorf("set tx checksum offload of %s in %s to %v: %w", iface, ns, on, err)
	}
	return nil
}

// TxChecksum reports whether TX checksum offload of iface in ns is on
// (ETHTOOL_GTXCSUM: any checksum feature active).
func TxChecksum(ns, iface string) (bool, error) {
	v := ethtoolValue{cmd: unix.ETHTOOL_GTXCSUM}
	if err := ethtool(ns, iface, &v); err != nil {
		return false, fmt.Errorf("get tx checksum offload of %s in %s: %w", iface, ns, err)
	}
	return v.data != 0, nil
}

// ethtool runs one SIOCETHTOOL ioctl on iface through an AF_INET socket
// created inside ns.
func ethtool(ns, iface string, v *ethtoolValue) error {
	if len(iface) == 0 || len(iface) >= unix.IFNAMSIZ {
		return fmt.Errorf("bad interface name %q", iface)
	}
	return netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		defer unix.Close(fd)
		var ifr ifreqData
		copy(ifr.name[:], iface)
		ifr.data = unsafe.Pointer(v)
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(v)
		if errno != 0 {
			return errno
		}
		return nil
	})
}
