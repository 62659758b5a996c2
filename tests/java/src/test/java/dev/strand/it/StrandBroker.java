package dev.strand.it;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real Strand broker process for a test: the release binary (STRAND_BIN, default
 * target/release/strand from the repository root) on a free loopback port with a fresh data
 * directory. kill9() / stop() / restart() keep the port and the data. close() stops it and
 * removes the directory (kept when the JVM property strand.keep=true).
 *
 * To check that a test asserts Apache Kafka's behaviour, run it against a running Kafka broker
 * instead: -Dstrand.external.bootstrap=127.0.0.1:PORT (and -Dstrand.external.logdir=DIR, its
 * log.dirs, for tests that read segment files); start() then launches nothing, the settings
 * given to start() must be in that broker's own configuration, and kill9/stop/restart are not
 * available.
 */
public final class StrandBroker implements AutoCloseable {
    private static final long READY_TIMEOUT_MS = 30_000;
    /** A killed broker's port may stay busy for a while (TIME-WAIT / FIN-WAIT-2). */
    private static final long PORT_BUSY_TIMEOUT_MS = 90_000;

    private final List<String> settings;
    private final Path root;
    private final int port;
    private Process process;
    private int starts;

    private StrandBroker(List<String> settings) throws IOException {
        this.settings = settings;
        this.root = Files.createTempDirectory("strand-java-");
        this.port = freePort();
    }

    /** Starts a broker with `--set key=value` for each "key=value" given. */
    public static StrandBroker start(String... keyValues) throws Exception {
        StrandBroker b = new StrandBroker(List.of(keyValues));
        if (EXTERNAL == null) {
            b.launch();
        }
        return b;
    }

    /** The bootstrap address of an already running broker to test instead of a Strand process. */
    private static final String EXTERNAL = System.getProperty("strand.external.bootstrap");

    public String bootstrap() {
        return EXTERNAL != null ? EXTERNAL : "127.0.0.1:" + port;
    }

    public int port() {
        return EXTERNAL != null ? Integer.parseInt(EXTERNAL.substring(EXTERNAL.lastIndexOf(':') + 1)) : port;
    }

    public Path dataDir() {
        return EXTERNAL != null ? Path.of(System.getProperty("strand.external.logdir", "/nonexistent")) : root.resolve("data");
    }

    public Path logFile() {
        return root.resolve("broker-" + starts + ".log");
    }

    public long pid() {
        return process.pid();
    }

    public static String binary() {
        String env = System.getenv("STRAND_BIN");
        if (env != null && !env.isEmpty()) {
            return env;
        }
        // Surefire runs in tests/java: the repository root is two levels up.
        return Path.of("").toAbsolutePath().resolve("../../target/release/strand").normalize().toString();
    }

    private void launch() throws Exception {
        if (EXTERNAL != null) {
            throw new UnsupportedOperationException("an external broker (strand.external.bootstrap) is not restarted by tests");
        }
        starts++;
        Files.createDirectories(dataDir());
        List<String> cmd = new ArrayList<>(List.of(binary(), "serve", "--listen", bootstrap(),
                "--data-dir", dataDir().toString(), "--shards", System.getProperty("strand.shards", "1")));
        for (String kv : settings) {
            cmd.add("--set");
            cmd.add(kv);
        }
        long deadline = System.currentTimeMillis() + PORT_BUSY_TIMEOUT_MS;
        while (true) {
            ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(logFile().toFile()));
            pb.environment().put("NO_COLOR", "1");
            process = pb.start();
            if (waitReady()) {
                return;
            }
            if (process.isAlive()) {
                process.destroyForcibly().waitFor();
                throw new IllegalStateException("broker did not accept connections on " + bootstrap()
                        + " within " + READY_TIMEOUT_MS + " ms; log:\n" + logTail(60));
            }
            String log = Files.readString(logFile());
            boolean busy = log.contains("in use") || log.contains("AddrInUse");
            if (!busy || System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("broker exited with " + process.exitValue() + "; log:\n" + logTail(60));
            }
            Thread.sleep(500);
        }
    }

    private boolean waitReady() throws InterruptedException {
        long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
        while (System.currentTimeMillis() < deadline) {
            if (!process.isAlive()) {
                return false;
            }
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 500);
                return true;
            } catch (IOException notYet) {
                Thread.sleep(50);
            }
        }
        return false;
    }

    /** SIGKILL, then wait for the process to be gone. */
    public void kill9() throws InterruptedException {
        if (process != null && process.isAlive()) {
            process.destroyForcibly();
            process.waitFor(30, TimeUnit.SECONDS);
        }
    }

    /** SIGTERM (a clean shutdown), SIGKILL after 10 s. */
    public void stop() throws InterruptedException {
        if (process != null && process.isAlive()) {
            process.destroy();
            if (!process.waitFor(10, TimeUnit.SECONDS)) {
                process.destroyForcibly().waitFor();
            }
        }
    }

    /** Starts the stopped or killed broker again on the same port and data directory. */
    public void restart() throws Exception {
        stop();
        launch();
    }

    public boolean isRunning() {
        return process != null && process.isAlive();
    }

    public String logTail(int lines) {
        try {
            List<String> all = Files.readAllLines(logFile());
            return String.join("\n", all.subList(Math.max(0, all.size() - lines), all.size()));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    @Override
    public void close() throws Exception {
        kill9();
        if (!Boolean.getBoolean("strand.keep")) {
            try (Stream<Path> walk = Files.walk(root)) {
                walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    public static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
