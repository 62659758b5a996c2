package dev.strand.it;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;

/**
 * One consumer-group member running on its own thread (KafkaConsumer is single-threaded): it
 * subscribes, polls, records what it consumed, commits after every poll (at least once), and
 * tracks its partitions through its rebalance listener in an ownership map shared by the whole
 * group, which records a violation whenever a partition is assigned to a member while another
 * member still owns it.
 */
final class GroupMember implements AutoCloseable {
    final String name;
    private final Thread thread;
    private final KafkaConsumerFactory factory;
    private final String topic;
    private final Map<TopicPartition, String> owners;
    private final List<String> violations;
    private volatile boolean running = true;

    final Set<TopicPartition> owned = ConcurrentHashMap.newKeySet();
    final List<ConsumerRecord<String, String>> consumed = java.util.Collections.synchronizedList(new ArrayList<>());
    final AtomicInteger assignedCalls = new AtomicInteger();
    final AtomicInteger revokedCalls = new AtomicInteger();
    final AtomicInteger lostCalls = new AtomicInteger();
    volatile int generation = -1;
    volatile String memberId = "";
    volatile Throwable failure;

    interface KafkaConsumerFactory {
        KafkaConsumer<String, String> create();
    }

    private GroupMember(String name, String topic, KafkaConsumerFactory factory, Map<TopicPartition, String> owners, List<String> violations) {
        this.name = name;
        this.topic = topic;
        this.factory = factory;
        this.owners = owners;
        this.violations = violations;
        this.thread = new Thread(this::run, "member-" + name);
    }

    /** Starts a member; `props` are extra consumer settings ("key", value pairs). */
    static GroupMember start(StrandBroker broker, String name, String group, String topic,
            Map<TopicPartition, String> owners, List<String> violations, Object... props) {
        List<Object> all = new ArrayList<>(List.of(ConsumerConfig.GROUP_ID_CONFIG, group,
                ConsumerConfig.CLIENT_ID_CONFIG, name,
                ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000,
                ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 500,
                ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, 20000));
        all.addAll(List.of(props));
        GroupMember m = new GroupMember(name, topic, () -> Clients.consumer(broker, all.toArray()), owners, violations);
        m.thread.start();
        return m;
    }

    private void run() {
        try (KafkaConsumer<String, String> consumer = factory.create()) {
            consumer.subscribe(List.of(topic), listener(consumer));
            while (running) {
                var records = consumer.poll(Duration.ofMillis(100));
                records.forEach(consumed::add);
                generation = consumer.groupMetadata().generationId();
                memberId = consumer.groupMetadata().memberId();
                if (!records.isEmpty()) {
                    commit(consumer);
                }
            }
        } catch (Throwable t) {
            failure = t;
        } finally {
            for (TopicPartition tp : owned) {
                owners.remove(tp, name);
            }
            owned.clear();
        }
    }

    private static void commit(KafkaConsumer<String, String> consumer) {
        try {
            consumer.commitSync(Duration.ofSeconds(10));
        } catch (org.apache.kafka.clients.consumer.CommitFailedException
                | org.apache.kafka.common.errors.RebalanceInProgressException e) {
            // A rebalance is under way: the records will be consumed again by the next owner.
        }
    }

    private ConsumerRebalanceListener listener(KafkaConsumer<String, String> consumer) {
        return new ConsumerRebalanceListener() {
            @Override
            public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
                revokedCalls.incrementAndGet();
                if (!partitions.isEmpty()) {
                    commit(consumer);
                }
                release(partitions);
            }

            @Override
            public void onPartitionsLost(Collection<TopicPartition> partitions) {
                lostCalls.incrementAndGet();
                release(partitions);
            }

            @Override
            public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
                assignedCalls.incrementAndGet();
                generation = consumer.groupMetadata().generationId();
                memberId = consumer.groupMetadata().memberId();
                for (TopicPartition tp : partitions) {
                    String previous = owners.putIfAbsent(tp, name);
                    if (previous != null && !previous.equals(name)) {
                        violations.add(tp + " assigned to " + name + " while " + previous + " owns it");
                    }
                    owned.add(tp);
                }
            }
        };
    }

    private void release(Collection<TopicPartition> partitions) {
        for (TopicPartition tp : partitions) {
            owners.remove(tp, name);
            owned.remove(tp);
        }
    }

    Set<TopicPartition> ownedNow() {
        return new HashSet<>(owned);
    }

    boolean isAlive() {
        return thread.isAlive();
    }

    /** Stops polling and closes the consumer (a dynamic member leaves the group; a static one stays). */
    @Override
    public void close() throws InterruptedException {
        running = false;
        thread.join(30_000);
        if (thread.isAlive()) {
            throw new IllegalStateException("member " + name + " did not stop");
        }
    }
}
