// Asks spymemcached's node locators where each key goes, with no memcached running:
// usage `java -cp spymemcached.jar spymemcached_oracle.java KEYS_FILE < SPECS`.
// Each SPECS line: `LOCATOR HASH SERVER...` (LOCATOR as ConnectionFactoryBuilder.Locator,
// HASH as DefaultHashAlgorithm; SERVER `host:port` as AddrUtil reads it, `name/host:port`
// for a hostname, created unresolved so nothing asks DNS, `...=weight` for a weight).
// The locator comes from the factory apps use: ConnectionFactoryBuilder (no weights) or
// KetamaConnectionFactory (weights); its nodes are stand-ins that only carry the address.
// Each key goes through StringUtils.validateKey (as MemcachedClient does) and then
// locator.getPrimary. Prints one line per spec: per key the index of the primary node in
// the app's list, or -1 when the client refuses the key. With `--set` first
// (live_check.py), a MemcachedClient over the same factory really stores each key of the
// first spec line instead and prints 1 per stored key, -1 per refused one.
// With PLACEMENT_TIMING=1 it prints per spec line only keys_per_s=N: the rate of the
// locator's own getPrimary over the keys, repeated for at least a second after one pass
// to warm up (bench/placement.py).
import java.lang.reflect.Proxy;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import net.spy.memcached.AddrUtil;
import net.spy.memcached.ConnectionFactoryBuilder;
import net.spy.memcached.DefaultConnectionFactory;
import net.spy.memcached.DefaultHashAlgorithm;
import net.spy.memcached.KetamaConnectionFactory;
import net.spy.memcached.KetamaNodeKeyFormatter;
import net.spy.memcached.MemcachedNode;
import net.spy.memcached.NodeLocator;
import net.spy.memcached.util.StringUtils;

class spymemcached_oracle {
  static MemcachedNode node(InetSocketAddress address) {
    return (MemcachedNode) Proxy.newProxyInstance(
        MemcachedNode.class.getClassLoader(),
        new Class<?>[] {MemcachedNode.class},
        (proxy, method, args) -> {
          switch (method.getName()) {
            case "getSocketAddress": return address;
            case "isActive": return true;
            case "toString": return "node " + address;
            case "hashCode": return System.identityHashCode(proxy);
            case "equals": return proxy == args[0];
            default: throw new UnsupportedOperationException(method.getName());
          }
        });
  }

  static void set(List<String> keys, String spec) throws Exception {
    String[] parts = spec.trim().split(" ");
    List<InetSocketAddress> addresses = new ArrayList<>();
    Map<InetSocketAddress, Integer> weights = new HashMap<>();
    for (int i = 2; i < parts.length; i++) {
      String[] server = parts[i].split("=");
      InetSocketAddress address = AddrUtil.getAddresses(server[0]).get(0);
      if (server.length > 1) weights.put(address, Integer.valueOf(server[1]));
      addresses.add(address);
    }
    DefaultHashAlgorithm hash = DefaultHashAlgorithm.valueOf(parts[1]);
    net.spy.memcached.ConnectionFactory factory = weights.isEmpty()
        ? new ConnectionFactoryBuilder()
            .setLocatorType(ConnectionFactoryBuilder.Locator.valueOf(parts[0]))
            .setHashAlg(hash).build()
        : new KetamaConnectionFactory(
            DefaultConnectionFactory.DEFAULT_OP_QUEUE_LEN,
            DefaultConnectionFactory.DEFAULT_READ_BUFFER_SIZE,
            DefaultConnectionFactory.DEFAULT_OP_QUEUE_MAX_BLOCK_TIME,
            hash, KetamaNodeKeyFormatter.Format.SPYMEMCACHED, weights);
    net.spy.memcached.MemcachedClient client =
        new net.spy.memcached.MemcachedClient(factory, addresses);
    StringBuilder out = new StringBuilder();
    for (String key : keys) {
      int stored;
      try {
        stored = client.set(key, 0, "1").get() ? 1 : -1;
      } catch (IllegalArgumentException refused) {
        stored = -1;
      }
      out.append(stored).append('\n');
    }
    client.shutdown();
    System.out.print(out);
  }

  public static void main(String[] argv) throws Exception {
    if (argv[0].equals("--set")) {
      List<String> keys = Files.readAllLines(Paths.get(argv[1]), StandardCharsets.UTF_8);
      set(keys, new java.io.BufferedReader(
          new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine());
      return;
    }
    List<String> keys = Files.readAllLines(Paths.get(argv[0]), StandardCharsets.UTF_8);
    java.io.BufferedReader specs = new java.io.BufferedReader(
        new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8));
    StringBuilder out = new StringBuilder();
    for (String line; (line = specs.readLine()) != null; ) {
      String[] parts = line.trim().split(" ");
      ConnectionFactoryBuilder.Locator locator = ConnectionFactoryBuilder.Locator.valueOf(parts[0]);
      DefaultHashAlgorithm hash = DefaultHashAlgorithm.valueOf(parts[1]);
      List<MemcachedNode> nodes = new ArrayList<>();
      Map<InetSocketAddress, Integer> weights = new HashMap<>();
      for (int i = 2; i < parts.length; i++) {
        String[] server = parts[i].split("=");
        InetSocketAddress address;
        if (server[0].startsWith("name/")) {
          String hostPort = server[0].substring(5);
          int colon = hostPort.lastIndexOf(':');
          address = InetSocketAddress.createUnresolved(
              hostPort.substring(0, colon), Integer.parseInt(hostPort.substring(colon + 1)));
        } else {
          address = AddrUtil.getAddresses(server[0]).get(0);
        }
        if (server.length > 1) weights.put(address, Integer.valueOf(server[1]));
        nodes.add(node(address));
      }
      NodeLocator located;
      if (!weights.isEmpty()) {
        located = new KetamaConnectionFactory(
            DefaultConnectionFactory.DEFAULT_OP_QUEUE_LEN,
            DefaultConnectionFactory.DEFAULT_READ_BUFFER_SIZE,
            DefaultConnectionFactory.DEFAULT_OP_QUEUE_MAX_BLOCK_TIME,
            hash, KetamaNodeKeyFormatter.Format.SPYMEMCACHED, weights).createLocator(nodes);
      } else {
        located = new ConnectionFactoryBuilder().setLocatorType(locator).setHashAlg(hash)
            .build().createLocator(nodes);
      }
      if ("1".equals(System.getenv("PLACEMENT_TIMING"))) {
        for (String key : keys) located.getPrimary(key);
        long start = System.nanoTime();
        long placed = 0;
        while (System.nanoTime() - start < 1_000_000_000L) {
          for (String key : keys) located.getPrimary(key);
          placed += keys.size();
        }
        out.append("keys_per_s=").append(placed / ((System.nanoTime() - start) / 1e9)).append('\n');
        continue;
      }
      StringBuilder row = new StringBuilder();
      for (String key : keys) {
        int index;
        try {
          StringUtils.validateKey(key, false);
          index = nodes.indexOf(located.getPrimary(key));
        } catch (IllegalArgumentException refused) {
          index = -1;
        }
        row.append(index).append(' ');
      }
      out.append(row.toString().trim()).append('\n');
    }
    System.out.print(out);
  }
}
