// Seed 004 "Update Container Configuration" (Go), kept as written in the seed.
// update_container_main.go holds the driver used by the integration tests.

// Go example
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
)

type UpdateRequest struct {
	Env       map[string]interface{} `json:"env,omitempty"`
	Tags      []string               `json:"tags,omitempty"`
	Resources map[string]interface{} `json:"resources,omitempty"`
	Image     string                 `json:"image,omitempty"`
}

func updateContainer(baseURL, cuid, username, password string) error {
	update := UpdateRequest{
		Env: map[string]interface{}{
			"NEW_VAR": "value",
			"OLD_VAR": nil, // Remove this env var
		},
		Tags: []string{"updated", "v2"},
		Resources: map[string]interface{}{
			"memory": "8192m",
		},
	}

	jsonData, _ := json.Marshal(update)

	req, err := http.NewRequest("PATCH",
		fmt.Sprintf("%s/containers/%s", baseURL, cuid),
		bytes.NewBuffer(jsonData))
	if err != nil {
		return err
	}

	auth := base64.StdEncoding.EncodeToString(
		[]byte(fmt.Sprintf("%s:%s", username, password)))
	req.Header.Set("Authorization", fmt.Sprintf("Basic %s", auth))
	req.Header.Set("Content-Type", "application/json")

	client := &http.Client{}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	if resp.StatusCode != 200 {
		return fmt.Errorf("update failed with status: %d", resp.StatusCode)
	}

	return nil
}
