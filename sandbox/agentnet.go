package sandbox

// Agent networking: an agent container must reach exactly one thing, repro's agent
// listener (an HTTP server bound to the host's IP on the agent bridge), and
// nothing else: not the internet, not the host's other services, not other
// containers.
//
// Two layers give that:
//
//   - the network (EnsureAgentNetwork): a Docker bridge network that is internal
//     (Docker's FORWARD rules drop whatever leaves its subnet, so there is no route
//     to the internet or to other networks, published ports included), IPv4 only,
//     with inter-container traffic disabled (enable_icc=false: agents cannot talk
//     to each other), on a host bridge interface of a known name;
//   - the host firewall (Firewall): packets from a container to the host itself
//     (any of its addresses, through the bridge) are delivered through the host's
//     INPUT chain, which Docker does not filter, so a host service bound to 0.0.0.0
//     would otherwise be reachable. Firewall installs INPUT rules that accept from
//     the bridge only TCP to Gateway:port (and packets of connections already
//     established) and drop the rest; IPv6 from the bridge is dropped altogether.
//
// ContainerConfig completes this for a Spec with Network set (see Spec.Network).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/repro/repro/fault"
)

// LabelInstance names, on an agent network, the repro instance that owns it.
const LabelInstance = "repro.instance"

// Docker bridge-driver options used for agent networks.
const (
	optBridgeName = "com.docker.network.bridge.name"
	optICC        = "com.docker.network.bridge.enable_icc"
	optMasquerade = "com.docker.network.bridge.enable_ip_masquerade"
)

// agentChainPrefix + the bridge name is the firewall chain of an agent bridge; a
// bridge name has at most 15 characters, so the chain name stays within
// iptables' 28.
const agentChainPrefix = "REPRO-AG-"

// AgentNetwork is the network agent containers join.
type AgentNetwork struct {
	Name    string // docker network name, e.g. "repro-agents-<instance8>"
	Bridge  string // host bridge interface name (<= 15 chars), e.g. "rag-<instance8>"
	Gateway string // the host's IPv4 address on the bridge: where repro's agent listener binds
	Subnet  string // the network's IPv4 subnet (CIDR)
}

var (
	// networkNamePattern is Docker's own pattern for names (containers, volumes),
	// applied to network names too: the daemon accepts more, repro does not need it.
	networkNamePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	// bridgeNamePattern: a Linux interface name (at most IFNAMSIZ-1 = 15 bytes) in a
	// charset that is also safe in an iptables chain name.
	bridgeNamePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)
)

// reservedNetworks are Docker's predefined network modes: never an agent network.
var reservedNetworks = []string{network.NetworkNone, network.NetworkHost, network.NetworkBridge, network.NetworkDefault}

// validNetworkName reports an error (made by errf) unless name can name an agent network.
func validNetworkName(name string, errf func(string, ...any) error, field string) error {
	if !networkNamePattern.MatchString(name) {
		return errf("sandbox: %s %q: must match %s", field, name, networkNamePattern)
	}
	for _, r := range reservedNetworks {
		if strings.EqualFold(name, r) {
			return errf("sandbox: %s %q: a predefined Docker network, not an agent network", field, name)
		}
	}
	return nil
}

// EnsureAgentNetwork creates, or finds, the agent network name: an internal bridge
// network, IPv4 only, without inter-container traffic, on the host bridge
// interface bridge, labelled repro.managed=true and repro.instance=instance.
// It is idempotent: an existing network of that name is used when it has exactly
// these properties, and refused (an infrastructure fault saying what differs) when
// it does not. The subnet and gateway are chosen by Docker's address pools.
func (d *Docker) EnsureAgentNetwork(ctx context.Context, name, bridge, instance string) (AgentNetwork, error) {
	if err := validNetworkName(name, fault.Infraf, "agent network name"); err != nil {
		return AgentNetwork{}, err
	}
	if !bridgeNamePattern.MatchString(bridge) {
		return AgentNetwork{}, fault.Infraf("sandbox: agent network bridge %q: must match %s", bridge, bridgeNamePattern)
	}
	if instance == "" || strings.ContainsFunc(instance, isSpaceOrCtl) {
		return AgentNetwork{}, fault.Infraf("sandbox: agent network instance %q: must be non-empty, without spaces or control characters", instance)
	}
	nw, found, err := d.inspectNetwork(ctx, name)
	if err != nil {
		return AgentNetwork{}, err
	}
	if !found {
		no, yes := false, true
		res, err := d.cli.NetworkCreate(ctx, name, client.NetworkCreateOptions{
			Driver:     "bridge",
			Internal:   true,
			EnableIPv4: &yes,
			EnableIPv6: &no,
			Options: map[string]string{
				optBridgeName: bridge,
				optICC:        "false",
				optMasquerade: "false",
			},
			Labels: map[string]string{LabelManaged: "true", LabelInstance: instance},
		})
		switch {
		case err == nil:
			for _, w := range res.Warning {
				d.logger.Warn("network create warning", "network", name, "warning", w)
			}
		case cerrdefs.IsConflict(err) || cerrdefs.IsAlreadyExists(err):
			// Created concurrently: check what is there below.
		default:
			return AgentNetwork{}, fault.Infraf("sandbox: create agent network %s (bridge %s): %w", name, bridge, err)
		}
		if nw, found, err = d.inspectNetwork(ctx, name); err != nil {
			return AgentNetwork{}, err
		}
		if !found {
			return AgentNetwork{}, fault.Infraf("sandbox: agent network %s vanished right after it was created", name)
		}
	}
	return agentNetworkOf(nw, name, bridge, instance)
}

// inspectNetwork returns the network named exactly name (not one whose ID merely
// starts with name).
func (d *Docker) inspectNetwork(ctx context.Context, name string) (network.Inspect, bool, error) {
	res, err := d.cli.NetworkInspect(ctx, name, client.NetworkInspectOptions{})
	switch {
	case cerrdefs.IsNotFound(err):
		return network.Inspect{}, false, nil
	case err != nil:
		return network.Inspect{}, false, fault.Infraf("sandbox: inspect network %s: %w", name, err)
	case res.Network.Name != name:
		return network.Inspect{}, false, nil
	}
	return res.Network, true, nil
}

// agentNetworkOf checks that nw is the agent network EnsureAgentNetwork would have
// made, and describes it.
func agentNetworkOf(nw network.Inspect, name, bridge, instance string) (AgentNetwork, error) {
	var wrong []string
	want := func(ok bool, format string, args ...any) {
		if !ok {
			wrong = append(wrong, fmt.Sprintf(format, args...))
		}
	}
	want(nw.Driver == "bridge", "driver %q, want bridge", nw.Driver)
	want(nw.Internal, "not internal")
	want(!nw.EnableIPv6, "IPv6 enabled")
	want(nw.Options[optBridgeName] == bridge, "bridge interface %q, want %q", nw.Options[optBridgeName], bridge)
	want(nw.Options[optICC] == "false", "inter-container traffic not disabled (%s=%q)", optICC, nw.Options[optICC])
	want(nw.Labels[LabelManaged] == "true", "label %s=%q, want true", LabelManaged, nw.Labels[LabelManaged])
	want(nw.Labels[LabelInstance] == instance, "label %s=%q, want %q", LabelInstance, nw.Labels[LabelInstance], instance)
	var v4 []network.IPAMConfig
	for _, c := range nw.IPAM.Config {
		if c.Subnet.Addr().Is4() {
			v4 = append(v4, c)
		}
	}
	want(len(v4) == 1, "%d IPv4 subnets, want 1", len(v4))
	if len(v4) == 1 {
		want(v4[0].Gateway.Is4() && v4[0].Subnet.Contains(v4[0].Gateway), "gateway %v not an IPv4 address in %v", v4[0].Gateway, v4[0].Subnet)
	}
	if len(wrong) > 0 {
		return AgentNetwork{}, fault.Infraf("sandbox: docker network %s (%.12s) exists but is not the agent network repro needs: %s; remove it (docker network rm %s) and retry",
			name, nw.ID, strings.Join(wrong, "; "), name)
	}
	return AgentNetwork{Name: name, Bridge: bridge, Gateway: v4[0].Gateway.String(), Subnet: v4[0].Subnet.String()}, nil
}

// RemoveAgentNetwork removes the agent network name. It is idempotent: a network
// that is absent is no error. A network of that name that repro does not manage
// is refused; one that still has containers attached fails (remove them first).
func (d *Docker) RemoveAgentNetwork(ctx context.Context, name string) error {
	if err := validNetworkName(name, fault.Infraf, "agent network name"); err != nil {
		return err
	}
	nw, found, err := d.inspectNetwork(ctx, name)
	if err != nil || !found {
		return err
	}
	if nw.Labels[LabelManaged] != "true" {
		return fault.Infraf("sandbox: docker network %s is not managed by repro (no label %s=true): not removing it", name, LabelManaged)
	}
	if _, err := d.cli.NetworkRemove(ctx, nw.ID, client.NetworkRemoveOptions{}); err != nil && !cerrdefs.IsNotFound(err) {
		return fault.Infraf("sandbox: remove agent network %s: %w", name, err)
	}
	return nil
}

// firewallMu serialises this process's rule changes (iptables itself waits for the
// xtables lock with -w; this keeps two calls for one bridge from interleaving).
var firewallMu sync.Mutex

// Firewall installs, idempotently, host firewall rules for the agent bridge
// n.Bridge: from that interface the host accepts only TCP to n.Gateway:port (the
// agent listener) and packets of connections already established, and drops
// everything else (TCP to other ports or addresses, UDP including DNS to the
// gateway, ICMP, ...). With IPv6 enabled on the host, every IPv6 packet from the
// bridge is dropped as well (agent networks are IPv4 only).
//
// The rules live in a chain of their own, "REPRO-AG-<bridge>" (in iptables, and in
// ip6tables for IPv6), reached by one rule "-i <bridge> -j REPRO-AG-<bridge>" at
// the top of INPUT. Calling Firewall again (a worker restart, another port)
// refills the chain without a moment of openness: a DROP is put first while the
// old rules are replaced. The rules match the bridge by name, so they hold before
// and after the network exists; they do not survive a host reboot, so the worker
// installs them at start, before any agent container runs.
//
// It runs the iptables binaries (PATH, then /usr/sbin, /sbin) and needs root (or
// CAP_NET_ADMIN and CAP_NET_RAW): without it, or without iptables, it returns an
// infrastructure fault saying what to do. On any error the rules it had already
// installed stay (they only restrict); calling Firewall again completes them.
// remove deletes what Firewall installed (jump rules, then the chains); it is
// idempotent.
func Firewall(ctx context.Context, n AgentNetwork, port int) (remove func(context.Context) error, err error) {
	if !bridgeNamePattern.MatchString(n.Bridge) {
		return nil, fault.Infraf("sandbox: firewall: bridge %q: must match %s", n.Bridge, bridgeNamePattern)
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil || !gw.Is4() {
		return nil, fault.Infraf("sandbox: firewall: gateway %q of %s: not an IPv4 address", n.Gateway, n.Bridge)
	}
	if port < 1 || port > 65535 {
		return nil, fault.Infraf("sandbox: firewall: port %d: must be in 1..65535", port)
	}
	if err := canAdminNetwork(); err != nil {
		return nil, err
	}
	v4, err := findIPTables("iptables")
	if err != nil {
		return nil, err
	}
	tables := []ipt{{bin: v4}}
	rules := [][]string{
		{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"-d", gw.String() + "/32", "-p", "tcp", "-m", "tcp", "--dport", strconv.Itoa(port), "-j", "ACCEPT"},
		{"-j", "DROP"},
	}
	all := [][][]string{rules}
	if hostHasIPv6() {
		v6, err := findIPTables("ip6tables")
		if err != nil {
			return nil, err
		}
		tables = append(tables, ipt{bin: v6})
		all = append(all, [][]string{{"-j", "DROP"}})
	}
	chain := agentChainPrefix + n.Bridge

	firewallMu.Lock()
	defer firewallMu.Unlock()
	for i, t := range tables {
		if err := t.install(ctx, chain, n.Bridge, all[i]); err != nil {
			return nil, fault.Infraf("sandbox: firewall for agent bridge %s: %w", n.Bridge, err)
		}
	}
	remove = func(ctx context.Context) error {
		firewallMu.Lock()
		defer firewallMu.Unlock()
		var errs []error
		for _, t := range tables {
			if err := t.uninstall(ctx, chain, n.Bridge); err != nil {
				errs = append(errs, err)
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fault.Infraf("sandbox: remove firewall of agent bridge %s: %w", n.Bridge, err)
		}
		return nil
	}
	return remove, nil
}

// CAP_NET_ADMIN's and CAP_NET_RAW's bits in /proc/self/status's CapEff.
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// canAdminNetwork reports an infrastructure fault unless this process may change
// the firewall: root, or CAP_NET_ADMIN and CAP_NET_RAW (iptables-legacy opens a
// raw socket) in its effective set.
func canAdminNetwork() error {
	if os.Geteuid() == 0 {
		return nil
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
				if caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil && caps&(1<<capNetAdmin) != 0 && caps&(1<<capNetRaw) != 0 {
					return nil
				}
			}
		}
	}
	return fault.Infraf("sandbox: the agent network firewall needs root (or CAP_NET_ADMIN and CAP_NET_RAW) to run iptables, and this process (uid %d) has neither: run the repro worker as root, or grant it those capabilities, or run no agent jobs on this host", os.Geteuid())
}

// findIPTables finds the binary name ("iptables" or "ip6tables") on PATH, or in
// /usr/sbin or /sbin (often not on a service's PATH).
func findIPTables(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fault.Infraf("sandbox: the agent network firewall needs %s, which is not on PATH nor in /usr/sbin or /sbin: install it (Debian/Ubuntu: apt-get install iptables), the same variant (nft or legacy) dockerd uses", name)
}

// hostHasIPv6 reports whether the kernel has IPv6 (then ip6tables rules are needed).
func hostHasIPv6() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

// ipt runs one iptables binary (iptables or ip6tables) on the filter table.
type ipt struct{ bin string }

// run runs the binary with args, waiting for the xtables lock; a non-zero exit is
// an error carrying its output.
func (t ipt) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, t.bin, append([]string{"-w"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return string(out), ctx.Err()
		}
		return string(out), fmt.Errorf("%s %s: %w: %s", t.bin, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// chainRules returns the chain's rules as `-S` prints them ("-A CHAIN ..."), and
// whether the chain exists.
func (t ipt) chainRules(ctx context.Context, chain string) ([]string, bool) {
	out, err := t.run(ctx, "-S", chain)
	if err != nil {
		return nil, false
	}
	var rules []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "-A ") {
			rules = append(rules, sc.Text())
		}
	}
	return rules, true
}

// install makes chain hold exactly rules (in order) and puts the jump from INPUT
// for packets coming in on bridge at the top of INPUT when it is not there.
func (t ipt) install(ctx context.Context, chain, bridge string, rules [][]string) error {
	have, exists := t.chainRules(ctx, chain)
	if !exists {
		if _, err := t.run(ctx, "-N", chain); err != nil {
			if _, exists = t.chainRules(ctx, chain); !exists {
				return err
			}
		}
	}
	if !t.holdsExactly(ctx, chain, have, rules) {
		// Refill, closed throughout: DROP first, then delete the old rules behind
		// it, append the new ones behind it, and only then take the DROP away.
		if _, err := t.run(ctx, "-I", chain, "1", "-j", "DROP"); err != nil {
			return err
		}
		for {
			now, _ := t.chainRules(ctx, chain)
			if len(now) <= 1 {
				break
			}
			if _, err := t.run(ctx, "-D", chain, "2"); err != nil {
				return err
			}
		}
		for _, r := range rules {
			if _, err := t.run(ctx, append([]string{"-A", chain}, r...)...); err != nil {
				return err
			}
		}
		if _, err := t.run(ctx, "-D", chain, "1"); err != nil {
			return err
		}
	}
	jump := []string{"INPUT", "-i", bridge, "-j", chain}
	if _, err := t.run(ctx, append([]string{"-C"}, jump...)...); err != nil {
		if _, err := t.run(ctx, append([]string{"-I", "INPUT", "1"}, jump[1:]...)...); err != nil {
			return err
		}
	}
	return nil
}

// holdsExactly reports whether chain, whose rules are have, consists of rules and
// nothing else (order aside: a set of ACCEPTs and a DROP accepts the same in any order).
func (t ipt) holdsExactly(ctx context.Context, chain string, have []string, rules [][]string) bool {
	if len(have) != len(rules) {
		return false
	}
	for _, r := range rules {
		if _, err := t.run(ctx, append([]string{"-C", chain}, r...)...); err != nil {
			return false
		}
	}
	return true
}

// uninstall deletes every jump from INPUT to chain for bridge, then the chain.
// Absent rules and chains are no error.
func (t ipt) uninstall(ctx context.Context, chain, bridge string) error {
	for range 100 { // a jump inserted more than once (by hand) goes too
		if _, err := t.run(ctx, "-D", "INPUT", "-i", bridge, "-j", chain); err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if _, exists := t.chainRules(ctx, chain); !exists {
		return nil
	}
	if _, err := t.run(ctx, "-F", chain); err != nil {
		return err
	}
	if _, err := t.run(ctx, "-X", chain); err != nil {
		return err // still referenced: a jump that is not ours
	}
	return nil
}
