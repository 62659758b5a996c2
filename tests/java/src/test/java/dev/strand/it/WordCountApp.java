package dev.strand.it;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * The Kafka Streams word count StreamsWordCountTest runs against Strand: lines from INPUT are
 * split into words, re-keyed by word (the groupBy writes the repartition topic
 * {@code <app id>-counts-repartition}), counted in the persistent RocksDB store "counts" (backed
 * by the compacted changelog {@code <app id>-counts-changelog}) and every new count goes to
 * OUTPUT as word -> count (Long).
 *
 * <p>main() runs the application in a JVM of its own, so that the test can SIGKILL it: it
 * prints one line per event on stdout — {@code STATE <new state>},
 * {@code RESTORED <store> <partition> <records>} (from the state restore listener) and
 * {@code FATAL <exception>} — and keeps running until killed.
 */
public final class WordCountApp {
    public static final String INPUT = "words-in";
    public static final String OUTPUT = "word-counts";
    public static final String STORE = "counts";

    private WordCountApp() {}

    public static Topology topology() {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(INPUT, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(line -> Arrays.asList(line.toLowerCase(Locale.ROOT).split("\\s+")))
                .filter((key, word) -> !word.isEmpty())
                .groupBy((key, word) -> word, Grouped.with(Serdes.String(), Serdes.String()))
                .count(Materialized.as(STORE))
                .toStream()
                .to(OUTPUT, Produced.with(Serdes.String(), Serdes.Long()));
        return builder.build();
    }

    /** Streams settings for a quick test: short commits and session timeout, one thread. */
    public static Properties config(String bootstrap, String appId, String stateDir, String guarantee) {
        Properties p = new Properties();
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 200);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        // Consumed repartition records are deleted (DeleteRecords) after each commit, not every 30 s.
        p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 0);
        // A killed member must leave the group quickly for the restarted one to get its tasks.
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1000);
        return p;
    }

    /** A restore listener that reports each finished restoration on the given stream. */
    public static StateRestoreListener printingRestoreListener(PrintStream out) {
        return new StateRestoreListener() {
            @Override
            public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

            @Override
            public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {}

            @Override
            public void onRestoreEnd(TopicPartition tp, String store, long total) {
                out.println("RESTORED " + store + " " + tp.partition() + " " + total);
            }
        };
    }

    /** args: bootstrap appId stateDir processingGuarantee. Runs until the process is killed. */
    public static void main(String[] args) throws InterruptedException {
        Properties config = config(args[0], args[1], args[2], args[3]);
        PrintStream out = System.out;
        KafkaStreams streams = new KafkaStreams(topology(), config);
        streams.setGlobalStateRestoreListener(printingRestoreListener(out));
        streams.setStateListener((now, before) -> out.println("STATE " + now));
        streams.setUncaughtExceptionHandler(e -> {
            out.println("FATAL " + e);
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler
                    .StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.start();
        new CountDownLatch(1).await();
    }
}
