// Driver for the seed's updateContainer (update_container.go), stdlib only:
//   go run update_container.go update_container_main.go <cuid>
// with CM_URL / CM_USER / CM_PASS in the environment.  Exit 0 and "OK" when the seed
// function returned nil.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: update_container <cuid>")
		os.Exit(2)
	}
	err := updateContainer(os.Getenv("CM_URL"), os.Args[1], os.Getenv("CM_USER"), os.Getenv("CM_PASS"))
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("OK")
}
