package charts

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"token-rotator/rotate"
)

// TestSchemaKeepsTheShutdownBudget: values.schema.json refuses a grace period or a Job deadline
// shorter than the rotation's bounds (rotate/budget.go), as deploy/budget_test.go holds deploy/
// to them: a kill while a new refresh token is only in the job's memory would lose it. The
// schema's minimums are the bounds, and a value one second under is refused.
func TestSchemaKeepsTheShutdownBudget(t *testing.T) {
	b, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			Grace   struct{ Minimum int } `json:"terminationGracePeriodSeconds"`
			CronJob struct {
				Properties struct {
					Deadline struct{ Minimum int } `json:"activeDeadlineSeconds"`
				}
			} `json:"cronjob"`
		}
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	grace := time.Duration(schema.Properties.Grace.Minimum) * time.Second
	if grace < rotate.ShutdownWait+10*time.Second {
		t.Errorf("the schema lets terminationGracePeriodSeconds down to %v, but a rotation may run %v after SIGTERM (rotate.ShutdownWait), plus 10s to exit", grace, rotate.ShutdownWait)
	}
	deadline := time.Duration(schema.Properties.CronJob.Properties.Deadline.Minimum) * time.Second
	if deadline < rotate.ClaimedFor {
		t.Errorf("the schema lets cronjob.activeDeadlineSeconds down to %v, but a rotation may run %v after its claim (rotate.ClaimedFor)", deadline, rotate.ClaimedFor)
	}
	for name, values := range map[string]map[string]any{
		"terminationGracePeriodSeconds": {"terminationGracePeriodSeconds": schema.Properties.Grace.Minimum - 1},
		"cronjob.activeDeadlineSeconds": {"cronjob": map[string]any{"activeDeadlineSeconds": schema.Properties.CronJob.Properties.Deadline.Minimum - 1}},
	} {
		if _, err := renderChart(t, values); err == nil {
			t.Errorf("%s one second under the schema's minimum rendered", name)
		}
	}
}
