package pages

import "time"

// Page is what every page shows in its header and footer.
type Page struct {
	Title     string    // the <title> and, where a page has no better heading, the <h1>
	Version   string    // repro version, shown in the footer
	Generated time.Time // when the page was rendered; zero: not shown
	Home      string    // href of the "repro" brand in the header; "" means "/"
}

// ----- run ----------------------------------------------------------------------

// RunView is the page of one run.
type RunView struct {
	Page
	ID          string
	Team        string
	State       string // queued, preparing, running, archiving, succeeded, failed, error, canceled
	Reason      string // why failed/error, shown prominently
	Task        string
	TaskHref    string // optional: the task's leaderboard
	Environment string
	Command     []string
	Seed        int64
	ImageID     string

	CreatedAt  *time.Time
	StartedAt  *time.Time
	FinishedAt *time.Time
	ExitCode   *int
	OOMKilled  bool
	TimedOut   bool

	FinalValLoss  *float64
	TrainTimeMs   *float64
	Steps         *int
	Curve         []CurvePoint // plotted: val loss, and train loss as a second series when present
	TargetValLoss *float64     // dashed line on the plot, and the target check next to the final loss
	Score         *Score       // nil: not scored

	Purpose          string // e.g. "submission", "verification", "audit"
	VerificationID   string
	VerificationHref string
	AuditID          string
	AuditHref        string

	LogTail      string // last ~100 lines; ANSI escapes and control characters are removed
	LogTruncated bool   // LogTail is not the whole log
	LogHref      string // optional: the complete log

	Files          []FileRow
	BundleLocation string
	ManifestSHA256 string
	ManifestHref   string // optional
}

// CurvePoint is one evaluation of a run's losses at a step; nil or non-finite losses
// are skipped in the plot.
type CurvePoint struct {
	Step      int
	ValLoss   *float64
	TrainLoss *float64
}

// Score is a run's score.
type Score struct {
	Valid  bool
	FSR    float64 // fraction of speedup recovered
	Reason string  // why invalid, or a note
}

// FileRow is one file of a run bundle.
type FileRow struct {
	Path   string
	Size   int64
	SHA256 string
	Href   string // optional download link
}

// ----- verification -------------------------------------------------------------

// VerificationView is the page of one verification of a record claim.
type VerificationView struct {
	Page
	ID       string
	Team     string
	Task     string
	TaskHref string // optional
	Profile  string
	State    string // queued, running, succeeded, failed, error, canceled...
	Progress Progress
	Verdict  string // "verified", "rejected", "inconclusive" or "" while running
	Reasons  []string

	// The loss test: one-sided t-test that the mean final val loss is ≤ TargetLoss.
	TargetLoss float64
	Alpha      float64
	PValue     *float64
	MeanLoss   *float64
	LossCILow  *float64
	LossCIHigh *float64

	// The time test: candidate against the baseline, interleaved on the same worker.
	Candidate SideSummary
	Baseline  SideSummary
	Speedup   SpeedupInfo

	Runs []VerificationRunRow // every run, failed and errored ones included

	ReportJSONHref     string
	ReportMarkdownHref string
	CreatedAt          *time.Time
	FinishedAt         *time.Time
}

// Progress counts finished runs.
type Progress struct{ Done, Total int }

// SideSummary summarises the train times of one side (candidate or baseline).
type SideSummary struct {
	N             int
	MeanMs        *float64
	CILowMs       *float64 // 95% CI of the mean
	CIHighMs      *float64
	OlympicMeanMs *float64  // mean without the fastest and slowest run
	TimesMs       []float64 // one per successful run, plotted
}

// SpeedupInfo is the result of the time comparison.
type SpeedupInfo struct {
	Test    string   // "paired", "welch" or "none"
	Speedup *float64 // baseline mean time ÷ candidate mean time: > 1 means the candidate is faster
	CILow   *float64 // 95% CI of Speedup
	CIHigh  *float64
	PValue  *float64 // one-sided: the candidate is faster
}

// VerificationRunRow is one run of a verification.
type VerificationRunRow struct {
	Pair        int
	Side        string // "candidate" or "baseline"
	RunID       string
	Href        string
	Seed        int64
	State       string
	ValLoss     *float64
	TrainTimeMs *float64
	Note        string // e.g. why it failed
}

// ----- audit --------------------------------------------------------------------

// AuditView is the page of one audit: a re-run of an archived run or verification.
type AuditView struct {
	Page
	ID      string
	Subject Subject
	State   string
	Verdict string // "reproduced", "drifted" or "" while running
	Reasons []string

	Comparisons      []AuditRow
	FingerprintDiffs []FingerprintDiff
	Runs             []AuditRunRow

	// Optional overlay plot of the val-loss curves (original vs re-run).
	OriginalCurve []CurvePoint
	RerunCurve    []CurvePoint
	TargetValLoss *float64

	ReportJSONHref     string
	ReportMarkdownHref string
	CreatedAt          *time.Time
	FinishedAt         *time.Time
}

// Subject is what an audit re-runs.
type Subject struct {
	Kind string // "run" or "verification"
	ID   string
	Href string
}

// AuditRow compares one quantity between the original and the re-run.
type AuditRow struct {
	What      string // e.g. "final val loss", "train time"
	Original  string
	Rerun     string
	Delta     string
	Tolerance string
	OK        bool
}

// FingerprintDiff is one field of the environment fingerprint that differs.
type FingerprintDiff struct {
	Field       string
	Original    string
	Rerun       string
	Significant bool // false: expected to differ (host, time...)
}

// AuditRunRow pairs an original run with its re-run.
type AuditRunRow struct {
	Seed          int64
	OriginalRunID string
	OriginalHref  string
	RerunRunID    string
	RerunHref     string
	RerunState    string
}

// ----- leaderboard --------------------------------------------------------------

// LeaderboardView is the leaderboard of one task.
type LeaderboardView struct {
	Page
	Task    TaskInfo
	Records []RecordRow // verified records, fastest first
	Scores  []ScoreRow  // best scored submissions, highest FSR first
}

// TaskInfo describes a task.
type TaskInfo struct {
	ID            string
	Change        string  // what the task asks to reproduce
	TargetValLoss float64 // 0: not shown
	Profile       string
}

// RecordRow is one verified record.
type RecordRow struct {
	Rank             int
	Team             string
	MeanTimeMs       float64
	CILowMs          float64
	CIHighMs         float64
	PValue           float64
	Runs             int
	Date             time.Time
	VerificationHref string
}

// ScoreRow is one team's best score.
type ScoreRow struct {
	Rank        int
	Team        string
	BestFSR     float64
	Runs        int
	BestRunHref string
	Date        time.Time
}

// ----- index --------------------------------------------------------------------

// IndexView is the start page: the tasks, and recent verifications and audits.
type IndexView struct {
	Page
	Tasks         []TaskRow
	Verifications []VerificationSummary
	Audits        []AuditSummary
}

// TaskRow is one task on the index page, linking to its leaderboard.
type TaskRow struct {
	ID            string
	Description   string
	Href          string
	Records       int
	BestTimeMs    *float64
	TargetValLoss *float64
}

// VerificationSummary is one line of the recent verifications.
type VerificationSummary struct {
	ID        string
	Href      string
	Team      string
	Task      string
	State     string
	Verdict   string
	CreatedAt time.Time
}

// AuditSummary is one line of the recent audits.
type AuditSummary struct {
	ID          string
	Href        string
	SubjectKind string
	SubjectID   string
	State       string
	Verdict     string
	CreatedAt   time.Time
}
