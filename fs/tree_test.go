package fs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// randomWorkload runs a seeded sequence of writes at random offsets,
// truncates, renames and hard links on root (a mount) and applies the same
// operations to the returned model: the content each name must hold. Hard
// links share one content pointer, as they share one inode.
func randomWorkload(t *testing.T, root string, seed uint64) map[string]*[]byte {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	files := map[string]*[]byte{}
	dirs := []string{"."}
	names := func() []string {
		ns := make([]string, 0, len(files))
		for n := range files {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		return ns
	}
	steps := 400
	if testing.Short() { // the VM harness runs -short under emulation
		steps = 100
	}
	for step := 0; step < steps; step++ {
		p := func(rel string) string { return filepath.Join(root, rel) }
		existing := names()
		switch op := rng.IntN(10); {
		case op == 0 || len(existing) == 0:
			dir := filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("d%d", step))
			if err := os.Mkdir(p(dir), 0755); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, dir)
			name := filepath.Join(dir, "f")
			content := []byte{}
			files[name] = &content
			if err := os.WriteFile(p(name), nil, 0644); err != nil {
				t.Fatal(err)
			}
		case op <= 4: // write at a random offset
			name := existing[rng.IntN(len(existing))]
			content := files[name]
			off := rng.IntN(len(*content) + 64<<10)
			data := make([]byte, 1+rng.IntN(200<<10))
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			f, err := os.OpenFile(p(name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(data, int64(off)); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if end := off + len(data); end > len(*content) {
				*content = append(*content, make([]byte, end-len(*content))...)
			}
			copy((*content)[off:], data)
		case op == 5: // truncate
			name := existing[rng.IntN(len(existing))]
			content := files[name]
			size := rng.IntN(len(*content) + 4096)
			if err := os.Truncate(p(name), int64(size)); err != nil {
				t.Fatal(err)
			}
			if size > len(*content) {
				*content = append(*content, make([]byte, size-len(*content))...)
			}
			*content = (*content)[:size]
		case op <= 7: // rename, possibly over another file
			from := existing[rng.IntN(len(existing))]
			to := filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("r%d", step))
			if rng.IntN(3) == 0 {
				to = existing[rng.IntN(len(existing))]
			}
			if from == to {
				continue
			}
			if err := os.Rename(p(from), p(to)); err != nil {
				t.Fatal(err)
			}
			files[to] = files[from]
			delete(files, from)
		case op == 8: // hard link
			from := existing[rng.IntN(len(existing))]
			to := filepath.Join(dirs[rng.IntN(len(dirs))], fmt.Sprintf("l%d", step))
			if err := os.Link(p(from), p(to)); err != nil {
				t.Fatal(err)
			}
			files[to] = files[from]
		default: // unlink
			name := existing[rng.IntN(len(existing))]
			if err := os.Remove(p(name)); err != nil {
				t.Fatal(err)
			}
			delete(files, name)
		}
	}
	return files
}

// treeDigest hashes every path, type and content below root.
func treeDigest(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fmt.Fprintf(h, "%s %v\n", rel, d.Type())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// TestRandomTree runs the same random workload in every mode and checks
// the mount and the backing directory against the model byte for byte,
// hard links against each other, and the final trees across modes.
func TestRandomTree(t *testing.T) {
	digests := map[string]string{}
	eachMode(t, func(t *testing.T, tm *testMount) {
		model := randomWorkload(t, tm.mnt, 42)
		dropCaches(t) // read back through fresh lookups
		inodes := map[*[]byte]uint64{}
		for name, content := range model {
			for _, path := range []string{tm.p(name), tm.b(name)} {
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, *content) {
					t.Errorf("%s: %d bytes differ from the model's %d", path, len(got), len(*content))
				}
			}
			var st unix.Stat_t
			if err := unix.Stat(tm.p(name), &st); err != nil {
				t.Fatal(err)
			}
			if ino, seen := inodes[content]; seen && ino != st.Ino {
				t.Errorf("%s: st_ino %d differs from its hard link's %d", name, st.Ino, ino)
			}
			inodes[content] = st.Ino
		}
		if m, b := treeDigest(t, tm.mnt), treeDigest(t, tm.backing); m != b {
			t.Errorf("mount and backing trees differ")
		}
		digests[tm.mode] = treeDigest(t, tm.mnt)
	})
	for mode, d := range digests {
		if d != digests["none"] {
			t.Errorf("mode %s left a different tree than none", mode)
		}
	}
}
