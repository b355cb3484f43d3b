package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// relayStream passes an upstream server-sent-event stream to the agent line
// by line, flushing at each event boundary, while collecting the data chunks
// for the trajectory and the usage chunk for metering.
func (c *call) relayStream(req *chatRequest, resp *http.Response) {
	h := c.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	c.w.WriteHeader(resp.StatusCode)
	c.ex.Status = resp.StatusCode
	rc := http.NewResponseController(c.w)
	_ = rc.Flush()

	var (
		chunks          []json.RawMessage
		usage           *wireUsage
		completionBytes int
		done            bool
		suppress        bool // dropping the current event (usage chunk the agent did not ask for)
		writeErr        error
	)
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	var readErr error
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			line = c.g.redact(line)
			content := bytes.TrimRight(line, "\r\n")
			if payload, ok := bytes.CutPrefix(content, []byte("data:")); ok {
				payload = bytes.TrimSpace(payload)
				if string(payload) == "[DONE]" {
					done = true
				} else if len(payload) > 0 {
					chunks = append(chunks, rawOrString(payload))
					var chunk struct {
						Choices []json.RawMessage `json:"choices"`
						Usage   *wireUsage        `json:"usage"`
					}
					if json.Unmarshal(payload, &chunk) == nil {
						for _, ch := range chunk.Choices {
							completionBytes += len(ch)
						}
						if chunk.Usage != nil {
							usage = chunk.Usage
							if !req.wantsUsage && len(chunk.Choices) == 0 {
								suppress = true
							}
						}
					}
				}
			}
			if !suppress && writeErr == nil {
				if _, writeErr = c.w.Write(line); writeErr == nil && len(content) == 0 {
					writeErr = rc.Flush()
				}
			}
			if len(content) == 0 {
				suppress = false // event boundary
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				readErr = err
			}
			break
		}
		if writeErr != nil {
			break // the agent went away; stop reading (the request context is cancelled)
		}
	}
	if writeErr == nil {
		_ = rc.Flush()
	}

	if chunks == nil {
		chunks = []json.RawMessage{}
	}
	c.ex.Response, _ = json.Marshal(chunks)
	if usage != nil {
		c.meter(usage.usage(c.ep), false)
	} else {
		c.meter(estimatedUsage(c.ep, len(req.messages), completionBytes), true)
	}
	switch {
	case writeErr != nil || c.r.Context().Err() != nil:
		c.ex.Error = "the agent closed the stream before its end"
		c.hungUp()
		return
	case readErr != nil:
		c.ex.Error = fmt.Sprintf("stream from model endpoint %q broke off: %s", c.ep.Name, c.g.redactString(readErr.Error()))
	case !done:
		c.ex.Error = fmt.Sprintf("stream from model endpoint %q ended without [DONE]", c.ep.Name)
	}
	c.finish()
}
