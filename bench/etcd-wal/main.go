// etcd-wal-bench drives etcd's own wal package (etcd 3.4) so that segstore's peer
// benchmark can put etcd's write-ahead log side by side with segstore on the same
// machine and disk, with the same save shapes. Built by build.sh.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/raft/raftpb"
	"go.etcd.io/etcd/wal"
	"go.etcd.io/etcd/wal/walpb"
	"go.uber.org/zap"
)

const usage = `usage:
  etcd-wal-bench save -dir D -saves N -entries E -bytes B -threads T -warmup W [-device-stat PATH]
  etcd-wal-bench write -dir D -entries N -bytes B -per-save K
  etcd-wal-bench read -dir D
`

var metadata = []byte("segstore-bench")

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "save":
		err = runSave(os.Args[2:])
	case "write":
		err = runWrite(os.Args[2:])
	case "read":
		err = runRead(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		err = usageError{fmt.Sprintf("unknown subcommand %q", os.Args[1])}
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(os.Stderr, "etcd-wal-bench: %v\n%s", err, usage)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "etcd-wal-bench: %v\n", err)
		os.Exit(1)
	}
}

func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() != 0 {
		return usageError{fmt.Sprintf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}

func payload(n int) []byte {
	// Non-zero bytes, so nothing along the way can treat the data as sparse.
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}

func runSave(args []string) error {
	fs := flag.NewFlagSet("save", flag.ContinueOnError)
	dir := fs.String("dir", "", "wal directory to create (must not exist)")
	saves := fs.Int("saves", 0, "measured saves, in total over all threads")
	entries := fs.Int("entries", 1, "entries per save")
	size := fs.Int("bytes", 0, "data bytes per entry")
	threads := fs.Int("threads", 1, "goroutines issuing saves")
	warmup := fs.Int("warmup", 0, "unmeasured saves before the measured phase")
	deviceStat := fs.String("device-stat", "", "sysfs block device stat file, e.g. /sys/dev/block/MAJ:MIN/stat")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *saves <= 0 || *entries <= 0 || *size < 0 || *threads <= 0 || *warmup < 0 {
		return usageError{"save needs -dir, -saves > 0, -entries > 0, -bytes >= 0, -threads > 0, -warmup >= 0"}
	}

	w, err := wal.Create(zap.NewNop(), *dir, metadata)
	if err != nil {
		return err
	}
	data := payload(*size)
	// Etcd's wal has no group commit: Save holds the wal's own lock across the fdatasync.
	// Taking our lock around index assignment and Save keeps indexes increasing in log
	// order and serialises no more than Save already does.
	var mu sync.Mutex
	next := uint64(1)
	save := func(ents []raftpb.Entry) error {
		mu.Lock()
		defer mu.Unlock()
		for i := range ents {
			ents[i].Index = next + uint64(i)
		}
		st := raftpb.HardState{Term: 1, Vote: 1, Commit: next - 1}
		next += uint64(len(ents))
		return w.Save(st, ents)
	}
	newEntries := func() []raftpb.Entry {
		ents := make([]raftpb.Entry, *entries)
		for i := range ents {
			ents[i] = raftpb.Entry{Term: 1, Type: raftpb.EntryNormal, Data: data}
		}
		return ents
	}

	warm := newEntries()
	for i := 0; i < *warmup; i++ {
		if err := save(warm); err != nil {
			w.Close()
			return err
		}
	}

	lat := make([][]int64, *threads)
	errs := make([]error, *threads)
	var wg sync.WaitGroup
	procBefore, procOK := procWriteBytes()
	devBefore, devOK := deviceWriteBytes(*deviceStat)
	start := time.Now()
	for t := 0; t < *threads; t++ {
		n := *saves / *threads
		if t < *saves%*threads {
			n++
		}
		wg.Add(1)
		go func(t, n int) {
			defer wg.Done()
			ents := newEntries()
			l := make([]int64, 0, n)
			for i := 0; i < n; i++ {
				s := time.Now()
				if err := save(ents); err != nil {
					errs[t] = err
					break
				}
				l = append(l, time.Since(s).Nanoseconds())
			}
			lat[t] = l
		}(t, n)
	}
	wg.Wait()
	elapsed := time.Since(start)
	procAfter, procOK2 := procWriteBytes()
	devAfter, devOK2 := deviceWriteBytes(*deviceStat)

	for _, e := range errs {
		if e != nil {
			w.Close()
			return e
		}
	}
	if err := w.Close(); err != nil {
		return err
	}

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "saves %d\n", *saves)
	fmt.Fprintf(out, "elapsed_ns %d\n", elapsed.Nanoseconds())
	if procOK && procOK2 {
		fmt.Fprintf(out, "proc_write_bytes %d\n", procAfter-procBefore)
	}
	if devOK && devOK2 {
		fmt.Fprintf(out, "device_write_bytes %d\n", devAfter-devBefore)
	}
	out.WriteString("latencies_ns")
	for _, l := range lat {
		for _, v := range l {
			out.WriteByte(' ')
			out.WriteString(strconv.FormatInt(v, 10))
		}
	}
	out.WriteByte('\n')
	return out.Flush()
}

// procWriteBytes reports write_bytes from /proc/self/io: bytes this process caused to
// be sent to storage, which includes the wal's preallocation and padding.
func procWriteBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "write_bytes:") {
			v := strings.TrimPrefix(line, "write_bytes:")
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// deviceWriteBytes reports the sectors-written counter of a sysfs block stat file in
// bytes; it covers everything written to the device, filesystem journal included.
func deviceWriteBytes(path string) (int64, bool) {
	if path == "" {
		return 0, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return 0, false
	}
	n, err := strconv.ParseInt(f[6], 10, 64)
	if err != nil {
		return 0, false
	}
	return n * 512, true
}

func runWrite(args []string) error {
	fs := flag.NewFlagSet("write", flag.ContinueOnError)
	dir := fs.String("dir", "", "wal directory to create (must not exist)")
	entries := fs.Int("entries", 0, "entries to write in total")
	size := fs.Int("bytes", 0, "data bytes per entry")
	perSave := fs.Int("per-save", 1, "entries per save")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" || *entries <= 0 || *size < 0 || *perSave <= 0 {
		return usageError{"write needs -dir, -entries > 0, -bytes >= 0, -per-save > 0"}
	}

	start := time.Now()
	w, err := wal.Create(zap.NewNop(), *dir, metadata)
	if err != nil {
		return err
	}
	data := payload(*size)
	ents := make([]raftpb.Entry, 0, *perSave)
	commit := uint64(0)
	for next := 1; next <= *entries; {
		ents = ents[:0]
		for len(ents) < *perSave && next <= *entries {
			ents = append(ents, raftpb.Entry{Term: 1, Index: uint64(next), Type: raftpb.EntryNormal, Data: data})
			next++
		}
		if err := w.Save(raftpb.HardState{Term: 1, Vote: 1, Commit: commit}, ents); err != nil {
			w.Close()
			return err
		}
		commit = ents[len(ents)-1].Index
	}
	if err := w.Close(); err != nil {
		return err
	}
	elapsed := time.Since(start)
	fmt.Printf("entries %d\n", *entries)
	fmt.Printf("elapsed_ns %d\n", elapsed.Nanoseconds())
	return nil
}

func runRead(args []string) error {
	fs := flag.NewFlagSet("read", flag.ContinueOnError)
	dir := fs.String("dir", "", "existing wal directory")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{"read needs -dir"}
	}

	start := time.Now()
	w, err := wal.Open(zap.NewNop(), *dir, walpb.Snapshot{})
	if err != nil {
		return err
	}
	_, _, ents, err := w.ReadAll()
	elapsed := time.Since(start)
	if err != nil {
		w.Close()
		return err
	}
	var dataBytes int64
	for i := range ents {
		dataBytes += int64(len(ents[i].Data))
	}
	fmt.Printf("entries %d\n", len(ents))
	fmt.Printf("data_bytes %d\n", dataBytes)
	fmt.Printf("elapsed_ns %d\n", elapsed.Nanoseconds())
	if peak, err := peakRSSBytes(); err == nil {
		fmt.Printf("peak_rss_bytes %d\n", peak)
	}
	return w.Close()
}

// peakRSSBytes reads VmHWM from /proc/self/status. The parent cannot take it from
// wait4: ru_maxrss keeps the high-water mark of the memory the child was forked from.
func peakRSSBytes() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) >= 2 && fields[0] == "VmHWM:" {
			kib, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, err
			}
			return kib * 1024, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/self/status")
}
