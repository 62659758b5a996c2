package dev.strand.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Kafka Streams against Strand (issue 17, part 5): the stateful word count of {@link WordCountApp}
 * (a repartition topic and a changelog-backed RocksDB store), at-least-once.
 *
 * <ul>
 *   <li>its output (the last count per word) equals the counts computed from the input, and the
 *       repartition records it consumed are deleted (DeleteRecords after each commit);
 *   <li>the application, run in a child JVM, is SIGKILLed once its offsets are committed and its
 *       input is quiescent, then restarted with an empty state directory (as on another
 *       machine): it restores the whole store from the changelog (restore listener), resumes at
 *       the committed offsets and, after more input, every count is exact — at-least-once only
 *       re-processes records after the last commit, and there are none;
 *   <li>SIGKILLed while input flows and restarted on the same state directory, every count ends
 *       between the true count and the true count plus what was uncommitted at the kill;
 *   <li>exactly_once_v2 needs transactions, which Strand does not serve: the application must
 *       stop with an error that says so (state ERROR, via the uncaught exception handler)
 *       within a bounded time, not hang.
 * </ul>
 * Internal topics are created by Streams itself (replication factor -1, the changelog
 * compacted); the test checks their configs as Strand reports them.
 */
class StreamsWordCountTest {
    private static final int PARTITIONS = 3;
    private static final long WAIT_MS = 90_000;
    private static final long EOS_FAILURE_MS = 30_000;
    private static final List<String> VOCABULARY = List.of("alpha", "bravo", "charlie", "delta",
            "echo", "foxtrot", "golf", "hotel", "india", "juliett", "kilo", "lima", "mike",
            "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango");

    static StrandBroker broker;
    static Admin admin;
    private final List<Process> children = new ArrayList<>();
    private final List<Path> tempDirs = new ArrayList<>();

    @BeforeAll
    static void start() throws Exception {
        broker = StrandBroker.start("group.initial.rebalance.delay.ms=0", "auto.create.topics.enable=false");
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        admin = Admin.create(p);
    }

    @AfterAll
    static void stop() throws Exception {
        if (admin != null) {
            admin.close();
        }
        if (broker != null) {
            broker.close();
        }
    }

    @AfterEach
    void cleanUp() throws Exception {
        for (Process child : children) {
            child.destroyForcibly().waitFor(30, TimeUnit.SECONDS);
        }
        for (Path dir : tempDirs) {
            if (Boolean.getBoolean("strand.keep")) {
                System.err.println("kept " + dir);
            } else {
                deleteTree(dir);
            }
        }
    }

    @Test
    void countsSurviveAKillAndARestoreFromTheChangelog() throws Exception {
        String app = "wordcount-alos";
        createTopics(WordCountApp.INPUT, WordCountApp.OUTPUT);
        Map<String, Long> expected = new TreeMap<>();
        produceLines(0, 2000, expected);

        AppProcess first = startApp(app, newTempDir("state-a"));
        waitFor("first run: output equals the input's counts", () -> expected.equals(lastCounts()));
        waitFor("first run: offsets committed to the end of input and repartition topics",
                () -> committedToEnd(app));
        checkInternalTopics(app);
        waitFor("first run: repartition records deleted up to the committed offsets (DeleteRecords)",
                () -> repartitionPurged(app));
        first.process.destroyForcibly().waitFor(30, TimeUnit.SECONDS); // SIGKILL

        long changelogRecords = recordCount(app + "-" + WordCountApp.STORE + "-changelog");
        AppProcess second = startApp(app, newTempDir("state-b"));
        waitFor("restarted app restored its store from the changelog",
                () -> second.restoredRecords() == changelogRecords && second.sawState("RUNNING"));
        produceLines(2000, 1000, expected);
        waitFor("restarted app: output equals the counts of all input", () -> expected.equals(lastCounts()));
        assertEquals(PARTITIONS, second.restoreEvents().size(), "one restore per store partition: " + second.events);
        assertTrue(second.fatal().isEmpty(), "no fatal error: " + second.events);
    }

    /**
     * A crash while input flows: SIGKILL once part of the input is committed, restart on the same
     * state directory (as after a machine reboot), let it finish. At-least-once processes a
     * record again when the crash came after it was processed and before its offset was
     * committed, so each count may exceed the true one — by at most the occurrences of the word
     * in the input and repartition records that were uncommitted at the kill (an input line
     * processed twice sends its words to the repartition topic twice; a repartition record
     * processed twice is counted twice). The test asserts true <= count <= true + that bound.
     */
    @Test
    void countsAfterACrashMidStreamAreAtLeastTheTrueCounts() throws Exception {
        String app = "wordcount-midstream";
        String repartition = app + "-" + WordCountApp.STORE + "-repartition";
        createTopics(WordCountApp.INPUT, WordCountApp.OUTPUT);
        int total = 4000;
        List<String> input = lines(0, total);
        Map<String, Long> expected = new TreeMap<>();
        input.forEach(line -> addWords(line, expected));
        Path dir = newTempDir("state-midstream");

        AppProcess first = startApp(app, dir);
        waitFor("app running", () -> first.sawState("RUNNING"));
        AtomicReference<Exception> producerError = new AtomicReference<>();
        Thread producer = new Thread(() -> {
            try {
                produceLines(0, input, 20); // about 2000 lines per second
            } catch (Exception e) {
                producerError.set(e);
            }
        }, "midstream-producer");
        producer.start();
        waitFor("some input committed", () -> committedSum(app, WordCountApp.INPUT) >= total / 4);
        first.process.destroyForcibly().waitFor(30, TimeUnit.SECONDS); // SIGKILL
        Map<TopicPartition, Long> inputFrom = committed(app, WordCountApp.INPUT);
        Map<TopicPartition, Long> repartitionFrom = committed(app, repartition);
        Map<TopicPartition, Long> inputTo = endOffsets(partitions(WordCountApp.INPUT));
        Map<TopicPartition, Long> repartitionTo = endOffsets(partitions(repartition));

        Map<String, Long> slack = new TreeMap<>();
        readRange(inputFrom, inputTo, r -> addWords(r.value(), slack));
        readRange(repartitionFrom, repartitionTo, r -> slack.merge(r.key(), 1L, Long::sum));
        System.err.println("at the kill: uncommitted input " + inputFrom + ".." + inputTo + ", repartition "
                + repartitionFrom + ".." + repartitionTo + "; allowed excess per word " + slack);

        AppProcess second = startApp(app, dir);
        producer.join(WAIT_MS);
        assertEquals(null, producerError.get(), "producer error");
        waitFor("restarted app committed all input", () -> committedToEnd(app));
        Map<String, Long> counts = lastCounts();
        System.err.println("counted twice after the crash: "
                + (counts.values().stream().mapToLong(Long::longValue).sum() - input.stream().mapToLong(l -> l.split(" ").length).sum())
                + " words");
        for (Map.Entry<String, Long> e : expected.entrySet()) {
            long got = counts.getOrDefault(e.getKey(), 0L);
            long bound = e.getValue() + slack.getOrDefault(e.getKey(), 0L);
            assertTrue(got >= e.getValue() && got <= bound, e.getKey() + ": count " + got
                    + " outside [" + e.getValue() + ", " + bound + "]; counts " + counts + ", expected " + expected);
        }
        assertEquals(expected.keySet(), counts.keySet(), "words counted");
        assertTrue(second.fatal().isEmpty(), "no fatal error: " + second.events);
    }

    @Test
    void exactlyOnceFailsClearlyWithoutTransactions() throws Exception {
        String app = "wordcount-eos";
        createTopics(WordCountApp.INPUT, WordCountApp.OUTPUT);
        produceLines(0, 10, new HashMap<>());
        Properties config = WordCountApp.config(broker.bootstrap(), app, newTempDir("state-eos").toString(),
                StreamsConfig.EXACTLY_ONCE_V2);
        AtomicReference<Throwable> fatal = new AtomicReference<>();
        long started = System.currentTimeMillis();
        try (KafkaStreams streams = new KafkaStreams(WordCountApp.topology(), config)) {
            streams.setUncaughtExceptionHandler(e -> {
                fatal.compareAndSet(null, e);
                return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.start();
            // Bounded: the producer's initTransactions must fail, not block for max.block.ms (60 s).
            waitFor("exactly_once_v2 application in state ERROR", EOS_FAILURE_MS,
                    () -> streams.state() == KafkaStreams.State.ERROR);
        }
        long tookMs = System.currentTimeMillis() - started;
        String chain = causeChain(fatal.get());
        System.err.println("exactly_once_v2 failed after " + tookMs + " ms: " + chain);
        assertTrue(chain.toLowerCase().contains("transaction"), "the error names transactions: " + chain);
    }

    // ------------------------------------------------------------------ the application process

    /** A WordCountApp in a child JVM, with the events it printed. */
    private static final class AppProcess {
        final Process process;
        final List<String> events = new CopyOnWriteArrayList<>();

        AppProcess(Process process) {
            this.process = process;
        }

        boolean sawState(String state) {
            return events.contains("STATE " + state);
        }

        List<String> restoreEvents() {
            return events.stream().filter(e -> e.startsWith("RESTORED ")).collect(Collectors.toList());
        }

        long restoredRecords() {
            return restoreEvents().stream().mapToLong(e -> Long.parseLong(e.substring(e.lastIndexOf(' ') + 1))).sum();
        }

        List<String> fatal() {
            return events.stream().filter(e -> e.startsWith("FATAL ")).collect(Collectors.toList());
        }
    }

    /** Starts the app in a child JVM; its state in dir/state, its stderr (log) in dir/app.log. */
    private AppProcess startApp(String appId, Path dir) throws IOException {
        Path stateDir = dir.resolve("state");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = List.of(java, "-Xmx256m", "-cp", System.getProperty("java.class.path"),
                "-Dlog4j2.configurationFile=" + System.getProperty("log4j2.configurationFile", "log4j2-test.properties"),
                "-Dstrand.log.level=" + System.getProperty("strand.log.level", "WARN"),
                WordCountApp.class.getName(), broker.bootstrap(), appId, stateDir.toString(), StreamsConfig.AT_LEAST_ONCE);
        Path log = dir.resolve("app.log");
        Process p = new ProcessBuilder(cmd).redirectError(log.toFile()).start();
        children.add(p);
        AppProcess app = new AppProcess(p);
        Thread reader = new Thread(() -> readEvents(p, app.events), "wordcount-events-" + p.pid());
        reader.setDaemon(true);
        reader.start();
        return app;
    }

    private static void readEvents(Process p, List<String> events) {
        try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8))) {
            for (String line; (line = r.readLine()) != null; ) {
                events.add(line);
            }
        } catch (IOException ignored) {
            // the process was killed
        }
    }

    // ------------------------------------------------------------------ input, output, offsets

    /** Lines [from, from+n) of the input: 1 to 6 words each, the same for the same arguments. */
    private static List<String> lines(int from, int n) {
        Random random = new Random(from);
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            List<String> words = new ArrayList<>();
            for (int w = 1 + random.nextInt(6); w > 0; w--) {
                words.add(VOCABULARY.get(random.nextInt(VOCABULARY.size())));
            }
            lines.add(String.join(" ", words));
        }
        return lines;
    }

    private static void addWords(String line, Map<String, Long> counts) {
        for (String word : line.split(" ")) {
            counts.merge(word, 1L, Long::sum);
        }
    }

    /** Produces lines [from, from+n) (keyed by line number) and adds their words to counts. */
    private void produceLines(int from, int n, Map<String, Long> counts) throws Exception {
        produceLines(from, lines(from, n), 0);
        lines(from, n).forEach(line -> addWords(line, counts));
    }

    /** Sends the lines, numbered from `from`; pauses 10 ms every `pace` lines when pace > 0. */
    private void produceLines(int from, List<String> lines, int pace) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p, new StringSerializer(), new StringSerializer())) {
            for (int i = 0; i < lines.size(); i++) {
                producer.send(new ProducerRecord<>(WordCountApp.INPUT, "line-" + (from + i), lines.get(i)));
                if (pace > 0 && i % pace == pace - 1) {
                    producer.flush();
                    Thread.sleep(10);
                }
            }
            producer.flush();
        }
    }

    /** The last count per word in the output topic, read from its beginning to its end. */
    private Map<String, Long> lastCounts() throws Exception {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        Map<String, Long> last = new TreeMap<>();
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(c, new StringDeserializer(), new LongDeserializer())) {
            List<TopicPartition> tps = partitions(WordCountApp.OUTPUT);
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<TopicPartition, Long> end = consumer.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 30_000;
            while (tps.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    fail("could not read " + WordCountApp.OUTPUT + " to its end " + end);
                }
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                    last.put(r.key(), r.value());
                }
            }
        }
        return last;
    }

    /** True when the group's committed offsets reach the end of every input and repartition partition. */
    private boolean committedToEnd(String app) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get();
        List<TopicPartition> sources = new ArrayList<>(partitions(WordCountApp.INPUT));
        sources.addAll(partitions(app + "-" + WordCountApp.STORE + "-repartition"));
        Map<TopicPartition, Long> end = endOffsets(sources);
        return sources.stream().allMatch(tp -> committed.containsKey(tp) && committed.get(tp).offset() == end.get(tp));
    }

    /** True when each repartition partition starts at the group's committed offset. */
    private boolean repartitionPurged(String app) throws Exception {
        String repartition = app + "-" + WordCountApp.STORE + "-repartition";
        Map<TopicPartition, Long> committed = committed(app, repartition);
        Map<TopicPartition, OffsetSpec> earliest = committed.keySet().stream()
                .collect(Collectors.toMap(tp -> tp, tp -> OffsetSpec.earliest()));
        Map<TopicPartition, ListOffsetsResultInfo> start = admin.listOffsets(earliest).all().get();
        return committed.entrySet().stream().allMatch(e -> e.getValue() > 0 && start.get(e.getKey()).offset() == e.getValue());
    }

    /** The group's committed offsets for the topic's partitions (0 where none). */
    private Map<TopicPartition, Long> committed(String app, String topic) throws Exception {
        Map<TopicPartition, OffsetAndMetadata> all = admin.listConsumerGroupOffsets(app).partitionsToOffsetAndMetadata().get();
        Map<TopicPartition, Long> offsets = new HashMap<>();
        for (TopicPartition tp : partitions(topic)) {
            OffsetAndMetadata o = all.get(tp);
            offsets.put(tp, o == null ? 0L : o.offset());
        }
        return offsets;
    }

    private long committedSum(String app, String topic) throws Exception {
        return committed(app, topic).values().stream().mapToLong(Long::longValue).sum();
    }

    /** Reads each partition's records in [from, to) and hands them to the action. */
    private void readRange(Map<TopicPartition, Long> from, Map<TopicPartition, Long> to,
            java.util.function.Consumer<ConsumerRecord<String, String>> action) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c, new StringDeserializer(), new StringDeserializer())) {
            consumer.assign(from.keySet());
            from.forEach(consumer::seek);
            long deadline = System.currentTimeMillis() + 30_000;
            while (from.keySet().stream().anyMatch(tp -> consumer.position(tp) < to.get(tp))) {
                if (System.currentTimeMillis() > deadline) {
                    fail("could not read " + from + " up to " + to);
                }
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.offset() < to.get(new TopicPartition(r.topic(), r.partition()))) {
                        action.accept(r);
                    }
                }
            }
        }
    }

    private long recordCount(String topic) throws Exception {
        List<TopicPartition> tps = partitions(topic);
        Map<TopicPartition, Long> end = endOffsets(tps);
        Map<TopicPartition, OffsetSpec> earliest = tps.stream().collect(Collectors.toMap(tp -> tp, tp -> OffsetSpec.earliest()));
        Map<TopicPartition, ListOffsetsResultInfo> start = admin.listOffsets(earliest).all().get();
        return tps.stream().mapToLong(tp -> end.get(tp) - start.get(tp).offset()).sum();
    }

    private Map<TopicPartition, Long> endOffsets(List<TopicPartition> tps) throws Exception {
        Map<TopicPartition, OffsetSpec> latest = tps.stream().collect(Collectors.toMap(tp -> tp, tp -> OffsetSpec.latest()));
        return admin.listOffsets(latest).all().get().entrySet().stream()
                .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
    }

    private List<TopicPartition> partitions(String topic) throws Exception {
        return admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().stream()
                .map(p -> new TopicPartition(topic, p.partition())).collect(Collectors.toList());
    }

    private void createTopics(String... names) throws Exception {
        Set<String> existing = admin.listTopics().names().get();
        List<String> stale = Stream.of(names).filter(existing::contains).collect(Collectors.toList());
        if (!stale.isEmpty()) {
            admin.deleteTopics(stale).all().get();
            waitFor("topics deleted", () -> Collections.disjoint(admin.listTopics().names().get(), stale));
        }
        admin.createTopics(Stream.of(names).map(n -> new NewTopic(n, PARTITIONS, (short) 1)).collect(Collectors.toList()))
                .all().get();
    }

    /** The internal topics Streams created: partitions like the input, the changelog compacted. */
    private void checkInternalTopics(String app) throws Exception {
        String changelog = app + "-" + WordCountApp.STORE + "-changelog";
        String repartition = app + "-" + WordCountApp.STORE + "-repartition";
        assertEquals(PARTITIONS, partitions(changelog).size());
        assertEquals(PARTITIONS, partitions(repartition).size());
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
        Config config = admin.describeConfigs(List.of(res)).all().get().get(res);
        assertEquals("compact", config.get("cleanup.policy").value(), changelog + " cleanup.policy");
        ConfigResource rep = new ConfigResource(ConfigResource.Type.TOPIC, repartition);
        Config repConfig = admin.describeConfigs(List.of(rep)).all().get().get(rep);
        assertEquals("delete", repConfig.get("cleanup.policy").value(), repartition + " cleanup.policy");
        assertEquals("-1", repConfig.get("retention.ms").value(), repartition + " retention.ms");
    }

    // ------------------------------------------------------------------ small helpers

    interface Check {
        boolean ok() throws Exception;
    }

    private static void waitFor(String what, Check check) throws Exception {
        waitFor(what, WAIT_MS, check);
    }

    private static void waitFor(String what, long timeoutMs, Check check) throws Exception {
        long start = System.currentTimeMillis();
        while (!check.ok()) {
            if (System.currentTimeMillis() > start + timeoutMs) {
                fail("timed out after " + timeoutMs + " ms waiting for: " + what);
            }
            Thread.sleep(200);
        }
        System.err.println("ok after " + (System.currentTimeMillis() - start) + " ms: " + what);
    }

    private Path newTempDir(String name) throws IOException {
        Path dir = Files.createTempDirectory("strand-streams-" + name + "-");
        tempDirs.add(dir);
        return dir;
    }

    private static String causeChain(Throwable t) {
        List<String> parts = new ArrayList<>();
        for (Throwable c = t; c != null; c = c.getCause()) {
            parts.add(c.toString());
        }
        return String.join(" <- caused by ", parts);
    }

    private static void deleteTree(Path dir) throws IOException {
        if (Files.exists(dir)) {
            try (Stream<Path> walk = Files.walk(dir)) {
                walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }
}
