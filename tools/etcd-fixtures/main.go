// Writes raftpb messages marshalled by etcd's own Go code, one file per case, so that
// segstore's tests can compare its encoding byte for byte. Run through generate.sh.
package main

import (
	"fmt"
	"io/ioutil"
	"math"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/etcdserver/api/snap"
	"go.etcd.io/etcd/raft/raftpb"
	"go.uber.org/zap"
)

type marshaler interface {
	Marshal() ([]byte, error)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: etcd-fixtures OUTPUT_DIR")
		os.Exit(2)
	}
	out := os.Args[1]
	confState := raftpb.ConfState{
		Voters:         []uint64{1, 2, 3},
		Learners:       []uint64{4},
		VotersOutgoing: []uint64{1, 2},
		LearnersNext:   []uint64{5},
		AutoLeave:      true,
	}
	cases := []struct {
		name    string
		message marshaler
	}{
		{"entry_empty", &raftpb.Entry{}},
		{"entry_nil_data", &raftpb.Entry{Term: 1, Index: 1, Type: raftpb.EntryNormal}},
		{"entry_empty_data", &raftpb.Entry{Term: 1, Index: 2, Type: raftpb.EntryNormal, Data: []byte{}}},
		{"entry_normal", &raftpb.Entry{Term: 5, Index: 300, Type: raftpb.EntryNormal, Data: []byte("hello raft")}},
		{"entry_conf_change", &raftpb.Entry{Term: 7, Index: 70000, Type: raftpb.EntryConfChange, Data: []byte{0, 1, 2, 255}}},
		{"entry_conf_change_v2", &raftpb.Entry{Term: 8, Index: 80000, Type: raftpb.EntryConfChangeV2, Data: []byte("v2")}},
		{"entry_max", &raftpb.Entry{Term: math.MaxUint64, Index: math.MaxUint64, Type: raftpb.EntryNormal, Data: make([]byte, 300)}},
		{"hard_state_empty", &raftpb.HardState{}},
		{"hard_state", &raftpb.HardState{Term: 3, Vote: 2, Commit: 100}},
		{"hard_state_max", &raftpb.HardState{Term: math.MaxUint64, Vote: math.MaxUint64, Commit: math.MaxUint64}},
		{"conf_state_empty", &raftpb.ConfState{}},
		{"conf_state", &confState},
		{"snapshot_metadata", &raftpb.SnapshotMetadata{ConfState: confState, Index: 1000, Term: 7}},
		{"snapshot_empty", &raftpb.Snapshot{}},
		{"snapshot", &raftpb.Snapshot{Data: []byte("state machine"), Metadata: raftpb.SnapshotMetadata{ConfState: confState, Index: 1000, Term: 7}}},
	}
	// A snapshot file as etcd's Snapshotter writes it (named term-index.snap).
	snapDir := filepath.Join(out, "snap")
	if err := os.MkdirAll(snapDir, 0755); err != nil {
		panic(err)
	}
	snapshot := raftpb.Snapshot{Data: []byte("state machine"), Metadata: raftpb.SnapshotMetadata{ConfState: confState, Index: 1000, Term: 7}}
	if err := snap.New(zap.NewNop(), snapDir).SaveSnap(snapshot); err != nil {
		panic(err)
	}
	for _, c := range cases {
		bytes, err := c.message.Marshal()
		if err != nil {
			panic(err)
		}
		if err := ioutil.WriteFile(filepath.Join(out, c.name+".bin"), bytes, 0644); err != nil {
			panic(err)
		}
	}
}
