package mountinfo

import "testing"

func TestParse(t *testing.T) {
	line := `36 35 0:40 / /mnt/with\040space rw,nosuid,nodev,relatime shared:1 master:2 - fuse.bpfusefs /data/back\134slash ro,user_id=0,group_id=0`
	e, err := Parse(line)
	if err != nil {
		t.Fatal(err)
	}
	want := Entry{
		Mountpoint: "/mnt/with space", Options: "rw,nosuid,nodev,relatime",
		FSType: "fuse.bpfusefs", Source: `/data/back\slash`, SuperOptions: "ro,user_id=0,group_id=0",
	}
	if e != want {
		t.Errorf("got  %+v\nwant %+v", e, want)
	}
	if !e.ReadOnly() {
		t.Error("superblock ro not seen")
	}
	if _, err := Parse("36 35 0:40 / /mnt rw"); err == nil {
		t.Error("a line without the separator parsed")
	}
}
