-- A tour of the query language on the demo shop.
--
--   cargo run --release -- demo                                  # builds demo.shopdb
--   cargo run --release -- demo.shopdb examples/repl_script.sql  # runs this script
--
-- Statements end with ';'. The script stops at the first error (exit code 1).

-- # What is there
SHOW TABLES;
DESCRIBE products;

-- # Keyword search: English stemming ("shoes" finds "Shoe"), Chinese segmentation.
SELECT id, title, price, score FROM search('lightweight running shoes') LIMIT 5;
SELECT id, title, price, score FROM search('跑步鞋') LIMIT 5;

-- # Filters run inside retrieval: category is a path prefix, price a range, unknown
-- # columns are attributes (color, gender).
SELECT id, title, brand, price
FROM search('jacket')
WHERE category = 'clothing/outerwear' AND price BETWEEN 80 AND 160 AND color IN ('black', 'navy')
ORDER BY price
LIMIT 5;

-- # Personalised search, recommendations and similar items use the trained models.
SELECT id, title, score FROM search('headphones', user => 'u0001') LIMIT 5;
SELECT id, title, category, score FROM recommend('u0001') WHERE price < 200 LIMIT 5;
SELECT id, title, brand, score FROM similar('p00001', max_per_brand => 1) LIMIT 5;

-- # Why is each hit there? One line per channel.
EXPLAIN SELECT id, title, score FROM recommend('u0001') LIMIT 3;

-- # Plain scans of the catalog and the log.
SELECT id, title, price FROM products WHERE brand = 'Acme' AND gender = 'women' ORDER BY price DESC LIMIT 5;
SELECT item_id, kind, ts FROM events WHERE user_id = 'u0001' ORDER BY ts DESC LIMIT 10;

-- # Writes commit at once and are all-or-nothing.
INSERT INTO products (id, title, brand, category, price, color)
VALUES ('tour-1', 'Acme 红色跑步鞋 Red Tour Running Shoe', 'Acme', 'shoes/running/road', 79.99, 'red');
INSERT INTO events (user_id, item_id, kind) VALUES ('tour-user', 'tour-1', 'purchase');
SELECT id, title FROM search('red tour') LIMIT 1;
DELETE FROM users WHERE id = 'tour-user';
DELETE FROM products WHERE id = 'tour-1';

-- # Models: retrain on the log (the forgotten user is gone from it; each model is tuned on
-- # the shop's held-out interactions first), list what tuning tried and chose, then measure
-- # offline on a RecBole-style split: one row per model and cut-off.
TRAIN;
SHOW MODELS;
EVALUATE;
SHOW STATS;
