// Asks gomemcache where each key goes: usage `gomemcache_oracle KEYS_FILE SERVER...`.
// Each key (one a line) goes through Client.Delete, whose selector is the real
// memcache.ServerList wrapped to record PickServer's answer and stop before any network
// I/O. Prints one line per key: the index of the picked server, or -1 when the client
// refuses the key. With `--set` first (live_check.py), memcache.New(servers...) really
// stores each key instead and prints 1 per stored key, -1 per refused one.
// With PLACEMENT_TIMING=1 it prints only keys_per_s=N: the rate of the library's own
// ServerList.PickServer over the keys, repeated for at least a second (bench/placement.py).
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
)

var errStop = errors.New("recorded; no network")

type recorder struct {
	list   *memcache.ServerList
	picked net.Addr
}

func (r *recorder) PickServer(key string) (net.Addr, error) {
	addr, err := r.list.PickServer(key)
	if err != nil {
		return nil, err
	}
	r.picked = addr
	return nil, errStop
}

func (r *recorder) Each(f func(net.Addr) error) error { return r.list.Each(f) }

func set(keysFile string, servers []string) {
	client := memcache.New(servers...)
	keys, err := os.Open(keysFile)
	if err != nil {
		panic(err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	scanner := bufio.NewScanner(keys)
	for scanner.Scan() {
		err := client.Set(&memcache.Item{Key: scanner.Text(), Value: []byte("1")})
		if err == nil {
			fmt.Fprintln(out, 1)
		} else if err == memcache.ErrMalformedKey {
			fmt.Fprintln(out, -1)
		} else {
			panic(err)
		}
	}
}

func main() {
	if os.Args[1] == "--set" {
		set(os.Args[2], os.Args[3:])
		return
	}
	list := new(memcache.ServerList)
	if err := list.SetServers(os.Args[2:]...); err != nil {
		fmt.Fprintln(os.Stderr, "SetServers:", err)
		os.Exit(2)
	}
	if os.Getenv("PLACEMENT_TIMING") == "1" {
		timing(list, os.Args[1])
		return
	}
	var addrs []string
	list.Each(func(a net.Addr) error { addrs = append(addrs, a.String()); return nil })
	rec := &recorder{list: list}
	client := memcache.NewFromSelector(rec)
	keys, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	scanner := bufio.NewScanner(keys)
	for scanner.Scan() {
		rec.picked = nil
		err := client.Delete(scanner.Text())
		index := -1
		if errors.Is(err, errStop) {
			for i, a := range addrs {
				if a == rec.picked.String() {
					index = i
				}
			}
		} else if err != memcache.ErrMalformedKey {
			panic(err)
		}
		fmt.Fprintln(out, index)
	}
}

// timing prints the keys/s of ServerList.PickServer over the keys (at least a second).
func timing(list *memcache.ServerList, keysFile string) {
	data, err := os.ReadFile(keysFile)
	if err != nil {
		panic(err)
	}
	keys := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	start := time.Now()
	placed := 0
	for time.Since(start) < time.Second {
		for _, key := range keys {
			if _, err := list.PickServer(key); err != nil {
				panic(err)
			}
		}
		placed += len(keys)
	}
	fmt.Printf("keys_per_s=%f\n", float64(placed)/time.Since(start).Seconds())
}
