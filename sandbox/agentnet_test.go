package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/repro/repro/fault"
	"github.com/repro/repro/internal/testenv"
)

// agentImage has python3, which the reachability probes use.
const agentImage = "repro-base/debian-torch:bookworm"

func TestAgentNetworkArgumentsRefused(t *testing.T) {
	t.Parallel()
	d := &Docker{} // validation happens before the daemon is contacted
	ctx := context.Background()
	for _, tt := range []struct{ name, bridge, instance, want string }{
		{"", "rag-1", "i", "name"},
		{"host", "rag-1", "i", "name"},
		{"bridge", "rag-1", "i", "name"},
		{"a/b", "rag-1", "i", "name"},
		{"repro-agents-1", "", "i", "bridge"},
		{"repro-agents-1", "rag-0123456789abc", "i", "bridge"}, // 16 chars: over IFNAMSIZ
		{"repro-agents-1", "rag 1", "i", "bridge"},
		{"repro-agents-1", "rag-1", "", "instance"},
	} {
		_, err := d.EnsureAgentNetwork(ctx, tt.name, tt.bridge, tt.instance)
		if err == nil || fault.Of(err) != fault.Infra || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("EnsureAgentNetwork(%q, %q, %q) = %v, want an infrastructure fault naming the %s", tt.name, tt.bridge, tt.instance, err, tt.want)
		}
	}
	if err := d.RemoveAgentNetwork(ctx, "none"); err == nil {
		t.Error("RemoveAgentNetwork(none) = nil, want refused")
	}
	good := AgentNetwork{Name: "n", Bridge: "rag-1", Gateway: "172.30.0.1", Subnet: "172.30.0.0/16"}
	for _, tt := range []struct {
		mutate func(*AgentNetwork)
		port   int
		want   string
	}{
		{func(n *AgentNetwork) { n.Bridge = "" }, 80, "bridge"},
		{func(n *AgentNetwork) { n.Bridge = "rag-1 -j ACCEPT" }, 80, "bridge"},
		{func(n *AgentNetwork) { n.Gateway = "" }, 80, "gateway"},
		{func(n *AgentNetwork) { n.Gateway = "fe80::1" }, 80, "gateway"},
		{func(n *AgentNetwork) { n.Gateway = "0.0.0.0/0" }, 80, "gateway"},
		{func(n *AgentNetwork) {}, 0, "port"},
		{func(n *AgentNetwork) {}, 65536, "port"},
	} {
		n := good
		tt.mutate(&n)
		if _, err := Firewall(ctx, n, tt.port); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Firewall(%+v, %d) = %v, want an error naming the %s", n, tt.port, err, tt.want)
		}
	}
	if c := agentChainPrefix + strings.Repeat("b", 15); len(c) > 28 {
		t.Errorf("chain %q is longer than iptables' 28 characters", c)
	}
}

// agentNames returns a unique network name, bridge name and instance for a test.
func agentNames() (name, bridge, instance string) {
	instance = fmt.Sprintf("%08x", rand.Uint32())
	return "repro-agents-t" + instance, "ragt-" + instance, "t" + instance
}

// newAgentNetwork makes a fresh agent network, removed (and checked gone) when the
// test ends, after the test's containers (cleanups run last-registered first).
func newAgentNetwork(t *testing.T, e env) AgentNetwork {
	t.Helper()
	name, bridge, instance := agentNames()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.d.RemoveAgentNetwork(ctx, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if _, err := e.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{}); err == nil {
			t.Errorf("cleanup: network %s still exists", name)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := e.d.EnsureAgentNetwork(ctx, name, bridge, instance)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// needFirewall skips (fails under REPRO_TEST_REQUIRE=firewall) unless this test
// process can change the host firewall.
func needFirewall(t *testing.T) {
	t.Helper()
	if err := canAdminNetwork(); err != nil {
		testenv.Missing(t, "firewall", err.Error())
	}
	bin, err := findIPTables("iptables")
	if err != nil {
		testenv.Missing(t, "firewall", err.Error())
	}
	if out, err := exec.Command(bin, "-w", "-S", "INPUT").CombinedOutput(); err != nil {
		testenv.Missing(t, "firewall", fmt.Sprintf("iptables -S INPUT: %v: %s", err, out))
	}
}

// iptablesS returns `<bin> -S [chain]`, or "" when that fails (no such chain).
func iptablesS(t *testing.T, bin string, chain ...string) string {
	t.Helper()
	path, err := findIPTables(bin)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(path, append([]string{"-w", "-S"}, chain...)...).CombinedOutput()
	if err != nil {
		return ""
	}
	return string(out)
}

// ipFamilies are the binaries Firewall installs rules with on this host.
func ipFamilies() []string {
	if hostHasIPv6() {
		return []string{"iptables", "ip6tables"}
	}
	return []string{"iptables"}
}

// installFirewall runs Firewall for n and port, removing the rules when the test
// ends (and, should Firewall fail half-way, whatever it left), checking that
// nothing of them is left.
func installFirewall(t *testing.T, n AgentNetwork, port int) func(context.Context) error {
	t.Helper()
	chain := agentChainPrefix + n.Bridge
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, fam := range ipFamilies() {
			bin, _ := findIPTables(fam)
			if err := (ipt{bin: bin}).uninstall(ctx, chain, n.Bridge); err != nil {
				t.Errorf("cleanup: %v", err)
			}
			if s := iptablesS(t, fam); strings.Contains(s, chain) {
				t.Errorf("cleanup: %s rules left for %s:\n%s", fam, n.Bridge, s)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	remove, err := Firewall(ctx, n, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return remove
}

// jumps counts the rules "-A INPUT -i <bridge> -j <chain>" in bin's INPUT chain.
func jumps(t *testing.T, bin, bridge string) int {
	t.Helper()
	want := fmt.Sprintf("-A INPUT -i %s -j %s%s", bridge, agentChainPrefix, bridge)
	return strings.Count(iptablesS(t, bin, "INPUT"), want+"\n")
}

func TestAgentNetworkEnsureIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	n := newAgentNetwork(t, e)
	if !strings.HasPrefix(n.Name, "repro-agents-t") || !strings.HasPrefix(n.Bridge, "ragt-") {
		t.Fatalf("network = %+v", n)
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil || !gw.Is4() {
		t.Fatalf("gateway %q is not IPv4", n.Gateway)
	}
	if p, err := netip.ParsePrefix(n.Subnet); err != nil || !p.Contains(gw) {
		t.Fatalf("subnet %q does not hold the gateway %s", n.Subnet, n.Gateway)
	}
	instance := n.Name[len("repro-agents-"):]
	again, err := e.d.EnsureAgentNetwork(ctx, n.Name, n.Bridge, instance)
	if err != nil || again != n {
		t.Fatalf("second EnsureAgentNetwork = %+v, %v; want %+v", again, err, n)
	}

	// What Docker has: internal, IPv4 only, no inter-container traffic, labelled,
	// on the named bridge, which carries the gateway address on this host.
	res, err := e.cli.NetworkInspect(ctx, n.Name, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nw := res.Network
	if nw.Driver != "bridge" || !nw.Internal || nw.EnableIPv6 || nw.Options[optBridgeName] != n.Bridge || nw.Options[optICC] != "false" ||
		nw.Labels[LabelManaged] != "true" || nw.Labels[LabelInstance] != instance {
		t.Fatalf("docker network = %+v", nw)
	}
	iface, err := net.InterfaceByName(n.Bridge)
	if err != nil {
		t.Fatalf("bridge interface: %v", err)
	}
	addrs, _ := iface.Addrs()
	if !slices.ContainsFunc(addrs, func(a net.Addr) bool { return strings.HasPrefix(a.String(), n.Gateway+"/") }) {
		t.Fatalf("bridge %s has %v, not the gateway %s", n.Bridge, addrs, n.Gateway)
	}

	// The same name with other properties is refused, and left alone.
	for _, tt := range []struct{ bridge, instance, want string }{
		{"ragt-other", instance, "bridge interface"},
		{n.Bridge, "someone-else", LabelInstance},
	} {
		if _, err := e.d.EnsureAgentNetwork(ctx, n.Name, tt.bridge, tt.instance); err == nil || !strings.Contains(err.Error(), tt.want) || fault.Of(err) != fault.Infra {
			t.Errorf("EnsureAgentNetwork(%s, %s, %s) = %v, want an infrastructure fault about the %s", n.Name, tt.bridge, tt.instance, err, tt.want)
		}
	}

	// A network that is not internal (made here by hand) is refused, and not removed.
	plain, _, _ := agentNames()
	if _, err := e.cli.NetworkCreate(ctx, plain, client.NetworkCreateOptions{Driver: "bridge"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cli.NetworkRemove(context.Background(), plain, client.NetworkRemoveOptions{}) })
	if _, err := e.d.EnsureAgentNetwork(ctx, plain, "ragt-plain", "x"); err == nil || !strings.Contains(err.Error(), "not internal") {
		t.Errorf("EnsureAgentNetwork on a plain bridge network = %v, want refused as not internal", err)
	}
	if err := e.d.RemoveAgentNetwork(ctx, plain); err == nil || !strings.Contains(err.Error(), "not managed by repro") {
		t.Errorf("RemoveAgentNetwork of an unmanaged network = %v, want refused", err)
	}
	if _, err := e.cli.NetworkInspect(ctx, plain, client.NetworkInspectOptions{}); err != nil {
		t.Errorf("the unmanaged network was removed: %v", err)
	}

	// Remove, twice.
	for i := range 2 {
		if err := e.d.RemoveAgentNetwork(ctx, n.Name); err != nil {
			t.Fatalf("RemoveAgentNetwork #%d: %v", i+1, err)
		}
	}
	if _, err := e.cli.NetworkInspect(ctx, n.Name, client.NetworkInspectOptions{}); err == nil {
		t.Fatal("network still exists after RemoveAgentNetwork")
	}
}

func TestAgentFirewallIdempotent(t *testing.T) {
	t.Parallel()
	needFirewall(t)
	ctx := context.Background()
	// The rules match the bridge by name: no network is needed to test them.
	_, bridge, _ := agentNames()
	n := AgentNetwork{Name: "unused", Bridge: bridge, Gateway: "172.31.255.1", Subnet: "172.31.255.0/24"}
	chain := agentChainPrefix + bridge
	installFirewall(t, n, 18080)
	remove := installFirewall(t, n, 18080)
	for _, fam := range ipFamilies() {
		if got := jumps(t, fam, bridge); got != 1 {
			t.Errorf("%s: %d jump rules after Firewall twice, want 1:\n%s", fam, got, iptablesS(t, fam, "INPUT"))
		}
		if first := strings.SplitN(iptablesS(t, fam, "INPUT"), "\n", 3)[1]; !strings.Contains(first, chain) {
			t.Errorf("%s: the jump is not the first rule of INPUT: %q", fam, first)
		}
	}
	rules := iptablesS(t, "iptables", chain)
	for _, want := range []string{
		"-A " + chain + " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
		"-A " + chain + " -d 172.31.255.1/32 -p tcp -m tcp --dport 18080 -j ACCEPT\n",
		"-A " + chain + " -j DROP\n",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("chain lacks %q:\n%s", want, rules)
		}
	}
	if got := strings.Count(rules, "-A "); got != 3 {
		t.Errorf("chain has %d rules, want 3:\n%s", got, rules)
	}
	// Last rule is the DROP.
	if lines := strings.Split(strings.TrimSpace(rules), "\n"); lines[len(lines)-1] != "-A "+chain+" -j DROP" {
		t.Errorf("the chain does not end with DROP:\n%s", rules)
	}
	if hostHasIPv6() {
		if got := iptablesS(t, "ip6tables", chain); strings.Count(got, "-A ") != 1 || !strings.Contains(got, "-A "+chain+" -j DROP\n") {
			t.Errorf("ip6tables chain = %q, want a single DROP", got)
		}
	}

	// Another port: the chain is refilled, still one jump.
	remove2 := installFirewall(t, n, 19090)
	rules = iptablesS(t, "iptables", chain)
	if strings.Contains(rules, "18080") || !strings.Contains(rules, "--dport 19090 -j ACCEPT") || strings.Count(rules, "-A ") != 3 || jumps(t, "iptables", bridge) != 1 {
		t.Errorf("after Firewall with another port:\n%s", rules)
	}

	// Remove twice (and the first remove func once more): nothing left, no error.
	for i, rm := range []func(context.Context) error{remove, remove2, remove} {
		if err := rm(ctx); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
	}
	for _, fam := range ipFamilies() {
		if s := iptablesS(t, fam); strings.Contains(s, chain) || strings.Contains(s, bridge) { // no network: Docker has no rules for it
			t.Errorf("%s rules left after remove:\n%s", fam, s)
		}
	}
}

// probe is one reachability check run inside an agent container.
type probe struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // tcp, http, udp, dns (a DNS query over UDP), icmp, resolve (getaddrinfo)
	Host string `json:"host"`
	Port int    `json:"port"`
}

// probeResult is what the container reports for a probe.
type probeResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"` // timeout, refused, unreachable, unavailable, or what came back
}

// probeScript runs the probes of argv[1] (JSON) in parallel, each with a 2 s
// timeout, and prints one "RESULT {json}" line per probe.
const probeScript = `
import errno, json, socket, struct, sys, threading, time
probes = json.loads(sys.argv[1])
results = {}

def classify(e):
    if isinstance(e, socket.timeout):
        return 'timeout'
    if isinstance(e, ConnectionRefusedError):
        return 'refused'
    if isinstance(e, OSError) and e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return 'unreachable'
    return type(e).__name__ + ': ' + str(e)

def dns_query(name):
    q = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\x00' + struct.pack('>HH', 1, 1)

def run(p):
    kind, host, port = p['kind'], p['host'], p['port']
    try:
        if kind in ('tcp', 'http'):
            fam = socket.AF_INET6 if ':' in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(2)
            addr = (host, port, 0, socket.if_nametoindex('eth0')) if fam == socket.AF_INET6 else (host, port)
            s.connect(addr)
            if kind == 'tcp':
                s.close()
                return True, 'connected'
            s.sendall(b'GET / HTTP/1.0\r\nHost: agent\r\n\r\n')
            data = b''
            while True:
                b = s.recv(4096)
                if not b:
                    break
                data += b
            s.close()
            head, _, body = data.partition(b'\r\n\r\n')
            return True, head.split(b'\r\n')[0].decode() + ' ' + body.decode()
        if kind == 'dns':
            # Connected: an ICMP port-unreachable comes back as ECONNREFUSED.
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.connect((host, port))
            s.send(dns_query('example.com'))
            data = s.recv(512)
            return True, 'reply of %d bytes' % len(data)
        if kind == 'udp':
            # Not connected: the host answers from its address on the bridge,
            # whichever of its addresses was asked.
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b'canary', (host, port))
            data, frm = s.recvfrom(512)
            return True, 'reply from %s' % frm[0]
        if kind == 'icmp':
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            except OSError as e:
                return False, 'unavailable: ' + str(e)
            s.settimeout(2)
            s.connect((host, 0))
            s.send(struct.pack('>BBHHH', 8, 0, 0, 0, 1) + b'agent-ping')
            s.recv(512)
            return True, 'echo reply'
        if kind == 'resolve':
            return True, str(socket.getaddrinfo(host, port, socket.AF_INET)[0][4])
        return False, 'unknown kind'
    except Exception as e:
        return False, classify(e)

def worker(p):
    results[p['name']] = run(p)

threads = [threading.Thread(target=worker, args=(p,), daemon=True) for p in probes]
for t in threads:
    t.start()
deadline = time.monotonic() + 6
for t in threads:
    t.join(max(0, deadline - time.monotonic()))
for p in probes:
    ok, detail = results.get(p['name'], (False, 'timeout'))
    print('RESULT ' + json.dumps({'name': p['name'], 'ok': ok, 'detail': detail}), flush=True)
`

// runProbes runs the probes in a fresh agent container on network and returns the
// results by name.
func runProbes(t *testing.T, e env, network string, probes []probe) map[string]probeResult {
	t.Helper()
	arg, err := json.Marshal(probes)
	if err != nil {
		t.Fatal(err)
	}
	spec := e.spec(t, "python3", "-c", probeScript, string(arg))
	spec.Image = agentImage
	spec.Network = network
	spec.Limits.MemoryBytes = 256 << 20
	res, log := e.run(t, spec, nil)
	if res.ExitCode != 0 {
		t.Fatalf("probe container: %+v\n%s", res, log)
	}
	out := map[string]probeResult{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		if j, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
			var r probeResult
			if err := json.Unmarshal([]byte(j), &r); err != nil {
				t.Fatalf("bad result line %q: %v", sc.Text(), err)
			}
			out[r.Name] = r
		}
	}
	if len(out) != len(probes) {
		t.Fatalf("%d results for %d probes; log:\n%s", len(out), len(probes), log)
	}
	return out
}

// tcpCanary counts the connections accepted on l.
func tcpCanary(t *testing.T, network, addr string) (port int, accepted *atomic.Int64) {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	accepted = new(atomic.Int64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, accepted
}

// hostIPv4s returns every non-loopback IPv4 address of this host.
func hostIPv4s(t *testing.T) []string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
			ips = append(ips, p.Addr().String())
		}
	}
	return ips
}

// dropCount reads the packet counter of the chain's final DROP rule.
func dropCount(t *testing.T, chain string) int64 {
	t.Helper()
	bin, _ := findIPTables("iptables")
	out, err := exec.Command(bin, "-w", "-L", chain, "-n", "-v", "-x").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -L %s: %v: %s", chain, err, out)
	}
	re := regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+DROP\s`)
	m := re.FindAllStringSubmatch(string(out), -1)
	if len(m) == 0 {
		t.Fatalf("no DROP rule in:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
	return n
}

// TestAgentNetworkReachability runs agent containers through Run on an agent
// network with its firewall and checks that they reach repro's listener and
// nothing else on the host, the internet or a peer agent; then removes the
// firewall and shows that the host's services become reachable: the rules, not
// luck, did the blocking.
func TestAgentNetworkReachability(t *testing.T) {
	t.Parallel()
	needFirewall(t)
	e := newEnv(t)
	testenv.Image(t, e.cli, agentImage)
	ctx := context.Background()
	n := newAgentNetwork(t, e)

	// repro's agent listener on Gateway:P.
	ll, err := net.Listen("tcp4", net.JoinHostPort(n.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	listenerPort := ll.Addr().(*net.TCPAddr).Port
	var requests atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprint(w, "agent-listener-ok")
	})}
	go srv.Serve(ll)
	t.Cleanup(func() { srv.Close() })

	// Canaries: a host service on all addresses (IPv4 and IPv6), another on the
	// gateway alone, a UDP echo on all addresses.
	anyPort, anyAccepted := tcpCanary(t, "tcp", ":0")
	gwPort, gwAccepted := tcpCanary(t, "tcp4", net.JoinHostPort(n.Gateway, "0"))
	uc, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close() })
	udpPort := uc.LocalAddr().(*net.UDPAddr).Port
	var datagrams atomic.Int64
	go func() {
		buf := make([]byte, 512)
		for {
			k, from, err := uc.ReadFrom(buf)
			if err != nil {
				return
			}
			datagrams.Add(1)
			uc.WriteTo(buf[:k], from)
		}
	}()

	// A peer agent on the same network, listening; it prints a line per connection.
	peerSpec := e.spec(t, "python3", "-c", `
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8000)); s.listen(8)
print('LISTENING', flush=True)
while True:
    c, a = s.accept(); print('PEER-ACCEPTED', a, flush=True); c.close()
`)
	peerSpec.Image, peerSpec.Network, peerSpec.Limits.MemoryBytes = agentImage, n.Name, 256<<20
	peerLog := newLogBuffer()
	stopPeer := make(chan struct{})
	peerCtx, peerCancel := context.WithTimeout(ctx, 3*time.Minute)
	defer peerCancel()
	peerDone := e.runAsync(peerCtx, peerSpec, peerLog, stopPeer)
	peerLog.waitFor(t, "LISTENING", peerDone)
	pi, err := e.cli.ContainerInspect(ctx, ContainerName(peerSpec.RunID), client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	peerEP := pi.Container.NetworkSettings.Networks[n.Name]
	if peerEP == nil || !peerEP.IPAddress.IsValid() {
		t.Fatalf("peer has no address on %s: %+v", n.Name, pi.Container.NetworkSettings.Networks)
	}
	peerIP := peerEP.IPAddress.String()

	probes := []probe{
		{"listener", "http", n.Gateway, listenerPort},
		{"gateway other port (bound to gateway)", "tcp", n.Gateway, gwPort},
		{"internet 1.1.1.1:80", "tcp", "1.1.1.1", 80},
		{"udp gateway", "udp", n.Gateway, udpPort},
		{"dns gateway:53", "dns", n.Gateway, 53},
		{"icmp gateway", "icmp", n.Gateway, 0},
		{"peer agent", "tcp", peerIP, 8000},
		{"resolve example.com", "resolve", "example.com", 80},
	}
	hostIPs := hostIPv4s(t)
	for _, ip := range hostIPs {
		probes = append(probes, probe{"host " + ip + " (bound to 0.0.0.0)", "tcp", ip, anyPort})
		if ip != n.Gateway {
			probes = append(probes, probe{"udp host " + ip, "udp", ip, udpPort})
		}
	}
	if iface, err := net.InterfaceByName(n.Bridge); err == nil {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
				probes = append(probes, probe{"ipv6 link-local " + p.Addr().String() + " (bound to [::])", "tcp", p.Addr().String(), anyPort})
			}
		}
	}

	remove := installFirewall(t, n, listenerPort)
	chain := agentChainPrefix + n.Bridge
	drops0 := dropCount(t, chain)
	with := runProbes(t, e, n.Name, probes)
	drops := dropCount(t, chain) - drops0
	if r := with["listener"]; !r.OK || r.Detail != "HTTP/1.0 200 OK agent-listener-ok" {
		t.Errorf("the agent listener is not reachable: %+v", r)
	}
	for _, p := range probes[1:] {
		r := with[p.Name]
		if r.OK {
			t.Errorf("with the firewall, %s (%s %s:%d) was reached: %s", p.Name, p.Kind, p.Host, p.Port, r.Detail)
		}
		// On the host's own addresses the firewall drops (a timeout), where without
		// it the host would accept or refuse.
		onHost := slices.Contains(hostIPs, p.Host) && p.Kind != "icmp"
		if onHost && r.Detail != "timeout" {
			t.Errorf("with the firewall, %s: %q, want a timeout (dropped)", p.Name, r.Detail)
		}
	}
	if requests.Load() != 1 || anyAccepted.Load() != 0 || gwAccepted.Load() != 0 || datagrams.Load() != 0 {
		t.Errorf("host side: listener requests %d (want 1), canary accepts %d and %d, UDP datagrams %d (want 0)",
			requests.Load(), anyAccepted.Load(), gwAccepted.Load(), datagrams.Load())
	}
	if drops == 0 {
		t.Errorf("the firewall's DROP rule counted no packets")
	}

	// Without the firewall, the same probes from a new container.
	if err := remove(ctx); err != nil {
		t.Fatal(err)
	}
	without := runProbes(t, e, n.Name, probes)
	for _, p := range probes {
		r := without[p.Name]
		switch {
		case p.Name == "listener" || strings.HasPrefix(p.Name, "host ") || strings.HasPrefix(p.Name, "udp ") || strings.HasPrefix(p.Name, "gateway other port"):
			if !r.OK {
				t.Errorf("without the firewall, %s was not reached (%s): then the test proves nothing", p.Name, r.Detail)
			}
		case p.Name == "dns gateway:53":
			if r.Detail == "timeout" {
				t.Errorf("without the firewall, %s still timed out: %+v", p.Name, r)
			}
		case p.Kind == "icmp":
			// Depends on whether the container may open ICMP sockets.
		default: // the internet, the peer, IPv6, external names: Docker's part
			if r.OK {
				t.Errorf("without the firewall, %s was reached (%s): Docker's isolation failed", p.Name, r.Detail)
			}
		}
	}
	if anyAccepted.Load() == 0 || gwAccepted.Load() == 0 || datagrams.Load() == 0 {
		t.Errorf("without the firewall the canaries saw nothing: accepts %d %d, datagrams %d", anyAccepted.Load(), gwAccepted.Load(), datagrams.Load())
	}

	close(stopPeer)
	if err := <-peerDone; err != nil {
		t.Errorf("peer: %v", err)
	}
	if strings.Contains(peerLog.String(), "PEER-ACCEPTED") {
		t.Errorf("the peer agent accepted a connection: %s", peerLog.String())
	}

	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%-52s %-28s %s\n", "probe (from an agent container)", "with firewall", "firewall removed")
	for _, p := range probes {
		cell := func(r probeResult) string {
			if r.OK {
				return "REACHED " + r.Detail
			}
			return "blocked: " + r.Detail
		}
		fmt.Fprintf(&tbl, "%-52s %-28s %s\n", p.Name, cell(with[p.Name]), cell(without[p.Name]))
	}
	fmt.Fprintf(&tbl, "DROP rule packets during the first run: %d", drops)
	t.Logf("reachability:\n%s", tbl.String())
}
