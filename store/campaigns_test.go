package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/repro/repro/fault"
)

// campaign creates a campaign and fails the test on error.
func campaign(t *testing.T, s *Store, c Campaign) Campaign {
	t.Helper()
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	out, err := s.CreateCampaign(context.Background(), c)
	if err != nil {
		t.Fatalf("CreateCampaign(%+v): %v", c, err)
	}
	return out
}

// finish ends campaign id in state st with outcome.
func finish(t *testing.T, s *Store, id string, st CampaignState, outcome string) Campaign {
	t.Helper()
	c, err := s.UpdateCampaign(context.Background(), id, func(c *Campaign) error {
		c.State, c.Outcome = st, outcome
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ids(cs []Campaign) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

func TestCampaignCreateGet(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	b, _ := s.CreateTeam(ctx, "b")
	v := campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t1", Spec: json.RawMessage(`{"runs":3}`)})
	au := campaign(t, s, Campaign{Kind: KindAudit, TeamID: b.ID, Subject: v.ID})
	if v.State != CampaignRunning || v.Seq <= 0 || v.CreatedAt.IsZero() || v.FinishedAt != nil {
		t.Fatalf("created = %+v", v)
	}
	if au.Seq <= v.Seq {
		t.Errorf("seq %d after %d", au.Seq, v.Seq)
	}
	if _, err := s.CreateCampaign(ctx, Campaign{ID: v.ID, Kind: KindAudit, TeamID: b.ID}); err == nil {
		t.Error("a second campaign with the same ID was created")
	}
	if _, err := s.CreateCampaign(ctx, Campaign{ID: uuid.NewString(), Kind: KindAudit, TeamID: "no-such-team"}); err == nil {
		t.Error("a campaign of an unknown team was created")
	}

	tests := []struct {
		name   string
		kind   CampaignKind
		team   string
		id     string
		wantOK bool
	}{
		{"by kind", KindVerification, "", v.ID, true},
		{"any kind", "", "", v.ID, true},
		{"any kind, audit", "", "", au.ID, true},
		{"own team", KindVerification, a.ID, v.ID, true},
		{"other kind", KindAudit, "", v.ID, false},
		{"other team", KindVerification, b.ID, v.ID, false},
		{"audit of team b", KindAudit, b.ID, au.ID, true},
		{"unknown", "", "", uuid.NewString(), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.GetCampaign(ctx, tt.kind, tt.team, tt.id)
			if !tt.wantOK {
				if !errors.Is(err, ErrNotFound) || !fault.IsUser(err) {
					t.Fatalf("GetCampaign = %+v, %v; want a user ErrNotFound", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.id || got.Seq == 0 || got.State != CampaignRunning {
				t.Errorf("got %+v", got)
			}
		})
	}

	got, err := s.GetCampaign(ctx, KindVerification, "", v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TeamName != "a" || got.TeamID != a.ID || got.Task != "t1" || string(got.Spec) != `{"runs":3}` || got.Kind != KindVerification ||
		got.Progress != nil || got.Report != nil || got.CancelRequested || !got.CreatedAt.Equal(v.CreatedAt) || got.Seq != v.Seq {
		t.Errorf("round trip = %+v, want %+v with team name a", got, v)
	}
	if got, _ := s.GetCampaign(ctx, KindAudit, "", au.ID); string(got.Spec) != "{}" || got.Subject != v.ID || got.TeamName != "b" {
		t.Errorf("audit = %+v: want spec {} by default and subject %s", got, v.ID)
	}
}

func TestListCampaigns(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	b, _ := s.CreateTeam(ctx, "b")
	// Oldest first: c[0] .. c[6].
	c := []Campaign{
		campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t1"}),
		campaign(t, s, Campaign{Kind: KindVerification, TeamID: b.ID, Task: "t1"}),
		campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t2"}),
		campaign(t, s, Campaign{Kind: KindAudit, TeamID: a.ID, Task: "t1", Subject: "x"}),
		campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t1"}),
		campaign(t, s, Campaign{Kind: KindVerification, TeamID: b.ID, Task: "t2"}),
		campaign(t, s, Campaign{Kind: KindAudit, TeamID: b.ID, Task: "t1", Subject: "y"}),
	}
	finish(t, s, c[0].ID, CampaignDone, "verified")
	finish(t, s, c[1].ID, CampaignDone, "rejected")
	finish(t, s, c[4].ID, CampaignDone, "verified")
	finish(t, s, c[5].ID, CampaignCanceled, "")
	finish(t, s, c[3].ID, CampaignDone, "reproduced")

	tests := []struct {
		name string
		f    CampaignFilter
		want []Campaign // newest first
	}{
		{"all verifications", CampaignFilter{Kind: KindVerification}, []Campaign{c[5], c[4], c[2], c[1], c[0]}},
		{"all audits", CampaignFilter{Kind: KindAudit}, []Campaign{c[6], c[3]}},
		{"agents: none", CampaignFilter{Kind: KindAgent}, nil},
		{"team a", CampaignFilter{Kind: KindVerification, TeamID: a.ID}, []Campaign{c[4], c[2], c[0]}},
		{"task t1", CampaignFilter{Kind: KindVerification, Task: "t1"}, []Campaign{c[4], c[1], c[0]}},
		{"verified on t1", CampaignFilter{Kind: KindVerification, Task: "t1", Outcome: "verified"}, []Campaign{c[4], c[0]}},
		{"verified of team b", CampaignFilter{Kind: KindVerification, TeamID: b.ID, Outcome: "verified"}, nil},
		{"running", CampaignFilter{Kind: KindVerification, State: CampaignRunning}, []Campaign{c[2]}},
		{"canceled", CampaignFilter{Kind: KindVerification, State: CampaignCanceled}, []Campaign{c[5]}},
		{"done", CampaignFilter{Kind: KindVerification, State: CampaignDone}, []Campaign{c[4], c[1], c[0]}},
		{"subject", CampaignFilter{Kind: KindAudit, Subject: "y"}, []Campaign{c[6]}},
		{"outcome reproduced", CampaignFilter{Kind: KindAudit, Outcome: "reproduced"}, []Campaign{c[3]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, next, err := s.ListCampaigns(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), ids(tt.want)) || next != "" {
				t.Errorf("got %v (next %q), want %v", ids(got), next, ids(tt.want))
			}
			for _, g := range got {
				if g.TeamName == "" {
					t.Errorf("%s has no team name", g.ID)
				}
			}
		})
	}

	t.Run("paging", func(t *testing.T) {
		for _, limit := range []int{1, 2, 4, 5, 6} {
			var seen []string
			cursor := ""
			pages := 0
			for {
				page, next, err := s.ListCampaigns(ctx, CampaignFilter{Kind: KindVerification, Limit: limit, Cursor: cursor})
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(page))
				}
				seen = append(seen, ids(page)...)
				pages++
				if next == "" {
					break
				}
				if pages > 10 {
					t.Fatal("paging does not end")
				}
				cursor = next
			}
			want := ids([]Campaign{c[5], c[4], c[2], c[1], c[0]})
			if !slices.Equal(seen, want) {
				t.Errorf("limit %d: pages = %v, want %v", limit, seen, want)
			}
			if wantPages := (5 + limit - 1) / limit; pages != wantPages {
				t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
			}
		}
	})

	t.Run("bad cursor", func(t *testing.T) {
		for _, cur := range []string{"zzz", "0", "-3", "1.5"} {
			if _, _, err := s.ListCampaigns(ctx, CampaignFilter{Kind: KindVerification, Cursor: cur}); err == nil || !fault.IsUser(err) {
				t.Errorf("cursor %q: err = %v, want a user error", cur, err)
			}
		}
	})
}

func TestUpdateCampaign(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	c := campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t1"})

	// A running campaign has no FinishedAt.
	up, err := s.UpdateCampaign(ctx, c.ID, func(c *Campaign) error {
		c.Progress, c.Reason = json.RawMessage(`{"done":1,"total":4}`), "waiting"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if up.FinishedAt != nil || string(up.Progress) != `{"done":1,"total":4}` || up.Reason != "waiting" || up.UpdatedAt.Before(c.UpdatedAt) {
		t.Fatalf("update = %+v", up)
	}

	// fn's error aborts the update.
	boom := errors.New("boom")
	if _, err := s.UpdateCampaign(ctx, c.ID, func(c *Campaign) error { c.Reason = "lost"; return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn error: got %v", err)
	}
	if got, _ := s.GetCampaign(ctx, "", "", c.ID); got.Reason != "waiting" {
		t.Errorf("aborted update was written: reason %q", got.Reason)
	}
	if _, err := s.UpdateCampaign(ctx, uuid.NewString(), func(*Campaign) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown campaign: got %v", err)
	}

	// Done: outcome, report and FinishedAt, once.
	done, err := s.UpdateCampaign(ctx, c.ID, func(c *Campaign) error {
		c.State, c.Outcome, c.Report, c.ReportLocation = CampaignDone, "verified", json.RawMessage(`{"verdict":"verified"}`), "file:///x/"
		c.CancelRequested = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if done.FinishedAt == nil || done.FinishedAt.Before(c.CreatedAt) {
		t.Fatalf("done FinishedAt = %v", done.FinishedAt)
	}
	first := *done.FinishedAt
	time.Sleep(2 * time.Millisecond)
	later, err := s.UpdateCampaign(ctx, c.ID, func(c *Campaign) error { c.Reason = "note"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if later.FinishedAt == nil || !later.FinishedAt.Equal(first) || !later.UpdatedAt.After(first) {
		t.Errorf("FinishedAt moved: %v → %v (updated %v)", first, later.FinishedAt, later.UpdatedAt)
	}
	got, err := s.GetCampaign(ctx, KindVerification, a.ID, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != CampaignDone || got.Outcome != "verified" || string(got.Report) != `{"verdict":"verified"}` || got.ReportLocation != "file:///x/" ||
		!got.CancelRequested || got.Reason != "note" || got.FinishedAt == nil || !got.FinishedAt.Equal(first) ||
		string(got.Progress) != `{"done":1,"total":4}` || got.Task != "t1" || string(got.Spec) != "{}" {
		t.Errorf("stored = %+v", got)
	}

	// Every terminal state finishes a campaign.
	for _, st := range []CampaignState{CampaignError, CampaignCanceled} {
		c := campaign(t, s, Campaign{Kind: KindAudit, TeamID: a.ID})
		if got := finish(t, s, c.ID, st, ""); got.FinishedAt == nil || !got.State.Terminal() {
			t.Errorf("%s: %+v", st, got)
		}
	}
	if CampaignRunning.Terminal() || !CampaignDone.Terminal() {
		t.Error("Terminal")
	}
}

func TestUnfinishedCampaigns(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	var running []string
	for i := range 6 {
		c := campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: fmt.Sprint("t", i)})
		campaign(t, s, Campaign{Kind: KindAudit, TeamID: a.ID})
		if i%3 == 1 {
			finish(t, s, c.ID, CampaignDone, "verified")
			continue
		}
		running = append(running, c.ID)
	}
	got, err := s.UnfinishedCampaigns(ctx, KindVerification)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), running) {
		t.Errorf("unfinished = %v, want oldest first %v", ids(got), running)
	}
	if got, _ := s.UnfinishedCampaigns(ctx, KindAgent); len(got) != 0 {
		t.Errorf("agents: %v", ids(got))
	}
}

// TestUnfinishedCampaignsPages crosses UnfinishedCampaigns' page size.
func TestUnfinishedCampaignsPages(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts 1000 rows")
	}
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	const n = 1003
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	now := fmtTime(time.Now())
	for i := range n {
		id := uuid.NewString()
		state := CampaignRunning
		if i%100 == 7 {
			state = CampaignDone
		} else {
			want = append(want, id)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO campaigns (id, kind, team_id, state, spec, created_at, updated_at) VALUES (?, ?, ?, ?, '{}', ?, ?)`,
			id, KindAudit, a.ID, state, now, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := s.UnfinishedCampaigns(ctx, KindAudit)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(got), want) {
		t.Errorf("got %d campaigns, want %d oldest first (first %v, last %v)", len(got), len(want), ids(got[:1]), ids(got[len(got)-1:]))
	}
}

func TestRunsOfCampaign(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	a, _ := s.CreateTeam(ctx, "a")
	v := campaign(t, s, Campaign{Kind: KindVerification, TeamID: a.ID, Task: "t1"})
	other := campaign(t, s, Campaign{Kind: KindAudit, TeamID: a.ID})
	seed := int64(0)
	mk := func(r Run) Run {
		t.Helper()
		seed++
		sd := seed
		r.ID, r.TeamID = uuid.NewString(), a.ID
		r.Spec = RunSpec{Environment: "e", Command: []string{"python", "train.py"}, TimeoutSeconds: 60, Seed: &sd, Task: "t1", ImageID: "sha256:abc"}
		out, err := s.CreateRun(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	plain := mk(Run{})
	var want []Run
	for pair := 1; pair <= 2; pair++ {
		for _, side := range []string{"candidate", "baseline"} {
			want = append(want, mk(Run{Purpose: PurposeVerification, ParentID: v.ID, Side: side, Pair: pair}))
			mk(Run{Purpose: PurposeAudit, ParentID: other.ID, Side: "rerun", Pair: pair})
		}
	}
	if plain.Purpose != PurposeSubmission {
		t.Errorf("default purpose = %q", plain.Purpose)
	}

	got, err := s.RunsOf(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("RunsOf = %d runs, want %d", len(got), len(want))
	}
	for i, r := range got {
		w := want[i]
		if r.ID != w.ID || r.Purpose != PurposeVerification || r.ParentID != v.ID || r.Side != w.Side || r.Pair != w.Pair ||
			r.Spec.Seed == nil || *r.Spec.Seed != *w.Spec.Seed || r.Spec.ImageID != "sha256:abc" || r.TeamName != "a" {
			t.Errorf("run %d = %+v, want %+v", i, r, w)
		}
		if i > 0 && r.Seq <= got[i-1].Seq {
			t.Errorf("not oldest first: %d after %d", r.Seq, got[i-1].Seq)
		}
	}
	if got, err := s.RunsOf(ctx, uuid.NewString()); err != nil || len(got) != 0 {
		t.Errorf("RunsOf(unknown) = %v, %v", got, err)
	}
	// GetRun and UpdateRun keep the campaign columns.
	if _, err := s.Transition(ctx, want[1].ID, []State{Queued}, Succeeded, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.GetRun(ctx, a.ID, want[1].ID); r.Side != "baseline" || r.Pair != 1 || r.ParentID != v.ID || r.Purpose != PurposeVerification || r.State != Succeeded {
		t.Errorf("after update: %+v", r)
	}

	for _, tt := range []struct {
		purpose string
		want    int
	}{{"", 9}, {PurposeSubmission, 1}, {PurposeVerification, 4}, {PurposeAudit, 4}, {PurposeCalibration, 0}} {
		runs, _, err := s.ListRuns(ctx, ListFilter{TeamID: a.ID, Purpose: tt.purpose})
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) != tt.want {
			t.Errorf("purpose %q: %d runs, want %d", tt.purpose, len(runs), tt.want)
		}
		for _, r := range runs {
			if tt.purpose != "" && r.Purpose != tt.purpose {
				t.Errorf("purpose %q: listed a %q run", tt.purpose, r.Purpose)
			}
		}
	}
}
