package dev.strand.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Shared helpers of the Java client tests: Kafka clients configured for a StrandBroker (short
 * timeouts so failures show quickly), unique topic names, topic creation, polling with deadlines.
 */
final class Clients {
    static final Duration TIMEOUT = Duration.ofSeconds(30);

    private Clients() {}

    /** A topic name no other test uses. */
    static String uniqueTopic(String prefix) {
        return prefix + "-" + UUID.randomUUID().toString().substring(0, 8);
    }

    /** Properties from "key", value pairs. */
    static Properties props(Object... kv) {
        Properties p = new Properties();
        for (int i = 0; i < kv.length; i += 2) {
            p.put(kv[i].toString(), kv[i + 1].toString());
        }
        return p;
    }

    static KafkaProducer<String, String> producer(StrandBroker b, Object... kv) {
        Properties p = props(kv);
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.putIfAbsent(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "30000");
        p.putIfAbsent(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    static KafkaConsumer<String, String> consumer(StrandBroker b, Object... kv) {
        Properties p = props(kv);
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.putIfAbsent(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.putIfAbsent(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.putIfAbsent(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.putIfAbsent(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    static Admin admin(StrandBroker b) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        return Admin.create(p);
    }

    /** Creates a topic with this many partitions (replication factor 1) and waits for it. */
    static void createTopic(StrandBroker b, String topic, int partitions, Map<String, String> configs) throws Exception {
        try (Admin admin = admin(b)) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1).configs(configs)))
                    .all().get(TIMEOUT.toSeconds(), TimeUnit.SECONDS);
        }
    }

    static void createTopic(StrandBroker b, String topic, int partitions) throws Exception {
        createTopic(b, topic, partitions, Map.of());
    }

    /** Sends the records one after another (each acknowledged) and returns their metadata. */
    static List<RecordMetadata> sendAll(KafkaProducer<String, String> producer,
            Collection<ProducerRecord<String, String>> records) throws Exception {
        List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
        for (ProducerRecord<String, String> r : records) {
            sent.add(producer.send(r));
        }
        producer.flush();
        List<RecordMetadata> out = new ArrayList<>();
        for (var f : sent) {
            out.add(f.get(TIMEOUT.toSeconds(), TimeUnit.SECONDS));
        }
        return out;
    }

    /** Polls until `count` records have arrived (fails after TIMEOUT) and returns them. */
    static List<ConsumerRecord<String, String>> pollCount(KafkaConsumer<String, String> consumer, int count) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (got.size() < count) {
            if (System.nanoTime() > deadline) {
                fail("got " + got.size() + " of " + count + " records within " + TIMEOUT);
            }
            consumer.poll(Duration.ofMillis(200)).forEach(got::add);
        }
        return got;
    }

    /** Reads a partition from `from` up to (excluding) `to` with an assigned consumer. */
    static List<ConsumerRecord<String, String>> readPartition(StrandBroker b, TopicPartition tp, long from, long to) {
        try (KafkaConsumer<String, String> c = consumer(b)) {
            c.assign(List.of(tp));
            c.seek(tp, from);
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            while (c.position(tp) < to) {
                if (System.nanoTime() > deadline) {
                    fail("read " + tp + " only to " + c.position(tp) + " of " + to + " within " + TIMEOUT);
                }
                c.poll(Duration.ofMillis(200)).records(tp).forEach(got::add);
            }
            got.removeIf(r -> r.offset() >= to);
            return got;
        }
    }

    /** Waits for a condition, failing with the message after the timeout. */
    static void waitFor(BooleanSupplier condition, Duration timeout, Supplier<String> message) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                fail("not within " + timeout + ": " + message.get());
            }
            Thread.sleep(20);
        }
    }
}
