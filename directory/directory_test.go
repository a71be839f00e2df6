package directory

import (
	"bytes"
	"context"
	"encoding/xml"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aredn/phonebookd/config"
	"github.com/aredn/phonebookd/health"
	"github.com/aredn/phonebookd/internal/shared"
)

var update = flag.Bool("update", false, "rewrite the golden XML files")

func fixture(t testing.TB, name string) []byte {
	b, err := os.ReadFile(shared.Path(t, "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		os.WriteFile(path, got, 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (go test -update to accept):\n%s", name, got)
	}
}

func TestAwkwardCSV(t *testing.T) {
	es, st, err := Parse(fixture(t, "phonebook-awkward.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// BOM and CRLF handled, header not an entry; bad: too many fields,
	// too few, no number, not digits, 2000-character name; 1 duplicate.
	if st.Rows != 14 || st.Entries != 8 || st.Bad != 5 || st.Duplicates != 1 {
		t.Errorf("stats %+v", st)
	}
	for _, e := range es {
		if strings.Contains(e.DisplayName(), "First") || strings.ContainsAny(e.DisplayName(), "\t\r") {
			t.Errorf("bad entry %+v", e)
		}
	}
	golden(t, "phonebook-awkward.xml", YealinkXML(es))
}

func TestLargeCSV(t *testing.T) {
	es, st, err := Parse(fixture(t, "phonebook-600.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 600 || st.Entries+st.Bad+st.Duplicates != 600 {
		t.Errorf("stats %+v", st)
	}
	golden(t, "phonebook-600.xml", YealinkXML(es))
	// deterministic: input order does not matter
	rev := append([]Entry(nil), es...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if !bytes.Equal(YealinkXML(rev), YealinkXML(es)) {
		t.Error("XML depends on input order")
	}
}

// FuzzParse: whatever the CSV, the XML published from it is a document
// an XML parser reads to its end without error, and every entry reads
// back as it is in memory.
func FuzzParse(f *testing.F) {
	f.Add(fixture(f, "phonebook-awkward.csv"))
	f.Add(fixture(f, "phonebook-600.csv")[:2000])
	f.Add([]byte("\"a\n"))
	f.Add([]byte("A\uFFFEb,C\uFFFF,HB9\uFDD0X,123\nD\U0001FFFE,\U0010FFFF,\x01\x7f,456\n"))
	f.Add([]byte("Bad\xed\xa0\x80Surrogate,\xff\xfe,X,789\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, st, err := Parse(data)
		if err != nil {
			return
		}
		if st.Entries != len(es) {
			t.Fatal("entries miscounted")
		}
		x := YealinkXML(es)
		if bytes.Contains(x, []byte("<script>")) {
			t.Fatal("markup not escaped")
		}
		got := decodeDirectory(t, x)
		want := append([]Entry(nil), es...)
		Sort(want)
		if len(got) != len(want) {
			t.Fatalf("%d entries read back, %d published", len(got), len(want))
		}
		for i, e := range want {
			if got[i].Name != e.DisplayName() || got[i].Telephone != e.Telephone {
				t.Fatalf("entry %d reads back as %q %q, want %q %q", i, got[i].Name, got[i].Telephone, e.DisplayName(), e.Telephone)
			}
		}
	})
}

// FuzzYealinkXML: entries from anywhere (not only Parse) give a document
// an XML parser accepts, with the forbidden characters dropped and the
// rest kept.
func FuzzYealinkXML(f *testing.F) {
	f.Add("Anna", "Muster", "HB9AAA", "441001")
	f.Add("A\uFFFE", "\uFFFF<&>", "\uFDD0\uFDEF", "\U0001FFFF\U0010FFFE1")
	f.Add("\x00\x01\x1f", "\xed\xa0\x80", "\xff", "\t\r\n")
	f.Fuzz(func(t *testing.T, first, last, call, tel string) {
		e := Entry{First: first, Last: last, Callsign: call, Telephone: tel}
		got := decodeDirectory(t, YealinkXML([]Entry{e}))
		if len(got) != 1 {
			t.Fatalf("%d entries read back", len(got))
		}
		if w := xmlReadBack(e.DisplayName()); got[0].Name != w {
			t.Fatalf("name reads back as %q, want %q", got[0].Name, w)
		}
		if w := xmlReadBack(tel); got[0].Telephone != w {
			t.Fatalf("telephone reads back as %q, want %q", got[0].Telephone, w)
		}
	})
}

// xmlReadBack is s as an XML parser gives it back: the characters XML
// does not allow dropped, line ends normalised.
func xmlReadBack(s string) string {
	var b strings.Builder
	for _, r := range s {
		if xmlChar(r) {
			b.WriteRune(r)
		}
	}
	return strings.ReplaceAll(strings.ReplaceAll(b.String(), "\r\n", "\n"), "\r", "\n")
}

type readBack struct {
	Name      string `xml:"Name"`
	Telephone string `xml:"Telephone"`
}

// decodeDirectory is the oracle: encoding/xml reads the whole document
// token by token without error, no character XML forbids or discourages
// is in it, and its entries are returned.
func decodeDirectory(t *testing.T, doc []byte) []readBack {
	t.Helper()
	if !utf8.Valid(doc) {
		t.Fatalf("not UTF-8: %q", doc)
	}
	for _, r := range string(doc) {
		if !xmlChar(r) {
			t.Fatalf("character %U in the XML", r)
		}
	}
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		_, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("XML does not parse: %v\n%q", err, doc)
		}
	}
	var dir struct {
		XMLName xml.Name   `xml:"YealinkIPPhoneDirectory"`
		Entries []readBack `xml:"DirectoryEntry"`
	}
	if err := xml.Unmarshal(doc, &dir); err != nil {
		t.Fatalf("XML does not decode: %v", err)
	}
	return dir.Entries
}

// TestXMLForbiddenCharacters: noncharacters, controls and bad UTF-8 in a
// phonebook never reach the XML, which parses; the rest of each name
// stays.
func TestXMLForbiddenCharacters(t *testing.T) {
	csv := "First,Name,Callsign,Telephone\n" +
		"Anna\uFFFE,Muster\uFFFF,HB9AAA,441001\n" +
		"Beat\uFDD0,Bär\uFDEF,HB9BBB,441002\n" +
		"Carl\U0001FFFE,Zoë\U0010FFFF,HB9CCC,441003\n" +
		"Dora\x01\x08,X\xed\xa0\x80Y,HB9DDD,441004\n"
	es, _, err := Parse([]byte(csv))
	if err != nil {
		t.Fatal(err)
	}
	got := decodeDirectory(t, YealinkXML(es))
	want := []string{"Anna Muster (HB9AAA)", "Beat Bär (HB9BBB)", "Carl Zoë (HB9CCC)", "Dora X\uFFFDY (HB9DDD)"}
	if len(got) != len(want) {
		t.Fatalf("%d entries: %+v", len(got), got)
	}
	for i, w := range want {
		if got[i].Name != w {
			t.Errorf("entry %d: %q, want %q", i, got[i].Name, w)
		}
	}
}

type env struct {
	f     *Fetcher
	rates *health.Rates
	main  config.Main
	reach []bool
}

func newEnv(t *testing.T, servers ...string) *env {
	e := &env{rates: health.NewRates(health.SystemClock{})}
	dir := t.TempDir()
	e.main = config.Main{StateDir: filepath.Join(dir, "state"), RunDir: filepath.Join(dir, "run"), WWWDir: filepath.Join(dir, "www")}
	e.f = NewFetcher(nil, e.rates, func(ok bool) { e.reach = append(e.reach, ok) })
	fc := config.Defaults().Fetcher
	fc.Servers, fc.Timeout, fc.MaxKB = servers, 1, 1024
	e.f.Configure(fc, e.main)
	return e
}

func (e *env) xml(t *testing.T) []byte {
	b, err := os.ReadFile(e.f.xmlPath())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFetchPublishAndCutoffs(t *testing.T) {
	body := fixture(t, "phonebook-600.csv")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	e := newEnv(t, srv.URL)
	ctx := context.Background()

	e.f.Fetch(ctx, nil)
	first := e.xml(t)
	golden(t, "phonebook-600.xml", first)
	if e.f.Writes() != 2 { // XML and CSV
		t.Fatalf("writes %d, want 2", e.f.Writes())
	}
	e.f.Fetch(ctx, nil) // unchanged data: nothing written
	if e.f.Writes() != 2 {
		t.Errorf("unchanged fetch wrote: %d writes", e.f.Writes())
	}
	body = fixture(t, "phonebook-awkward.csv")
	e.f.Fetch(ctx, nil) // 8 entries against about 600: held back
	golden(t, "phonebook-600.xml", e.xml(t))
	e.f.Fetch(ctx, nil) // confirmed by a second fetch
	golden(t, "phonebook-awkward.xml", e.xml(t))
	good := e.xml(t)

	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("First,Name,Callsign,Telephone\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer hang.Close()
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		line := bytes.Repeat([]byte("Anna,Muster,HB9AAA,441001\n"), 1024)
		for i := 0; i < 50<<20/len(line) && r.Context().Err() == nil; i++ {
			if _, err := w.Write(line); err != nil {
				return
			}
		}
	}))
	defer big.Close()
	bad := newEnv(t, hang.URL, big.URL)
	bad.main = e.main
	fc := config.Defaults().Fetcher
	fc.Servers, fc.Timeout, fc.MaxKB = []string{hang.URL, big.URL}, 1, 1024
	bad.f.Configure(fc, e.main)
	bad.f.LoadLastGood()
	start := time.Now()
	bad.f.Fetch(ctx, nil)
	if n := bad.rates.PerHour(health.CategoryFetch); n != 2 {
		t.Errorf("fetch failures counted %d, want 2", n)
	}
	if len(bad.reach) != 1 || bad.reach[0] {
		t.Errorf("reachability reports %v", bad.reach)
	}
	if !bytes.Equal(bad.xml(t), good) {
		t.Error("last good directory replaced after failed fetches")
	}
	if st := bad.f.Status(); !strings.Contains(st.String(), "larger than 1024 KiB") {
		t.Errorf("status lacks the cap error: %s", st.String())
	}
	t.Logf("hang + 50 MB cut off after %s", time.Since(start).Round(time.Millisecond))
}

func TestLastGoodLoadedAtStart(t *testing.T) {
	e := newEnv(t)
	os.MkdirAll(e.main.StateDir, 0o755)
	os.WriteFile(filepath.Join(e.main.StateDir, CSVFile), fixture(t, "phonebook-awkward.csv"), 0o644)
	e.f.LoadLastGood()
	golden(t, "phonebook-awkward.xml", e.xml(t))
}

func BenchmarkRebuild600(b *testing.B) {
	data := fixture(b, "phonebook-600.csv")
	b.ReportAllocs()
	for b.Loop() {
		es, _, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		YealinkXML(es)
	}
}

func TestConditionalFetch(t *testing.T) {
	body := fixture(t, "phonebook-awkward.csv")
	var hits, notModified int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.Header.Get("If-None-Match") == `"v1"` {
			notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(body) // chunked: no Content-Length for a streamed write
	}))
	defer srv.Close()
	e := newEnv(t, srv.URL+"/phonebook.csv?x=1")
	e.f.Fetch(context.Background(), nil)
	e.f.Fetch(context.Background(), nil)
	if hits != 2 || notModified != 1 || e.f.Writes() != 2 {
		t.Errorf("hits %d, not modified %d, writes %d", hits, notModified, e.f.Writes())
	}
	golden(t, "phonebook-awkward.xml", e.xml(t))
}
