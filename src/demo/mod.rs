//! The retail demo data set, generated deterministically (same seed, same files).
//!
//! Three years of daily orders (2022-01-01 to 2024-12-31) with weekly and yearly
//! seasonality (weekends, the 618 and Singles' Day sales, Chinese New Year) and growth,
//! about 535 thousand orders and 1.6 million order lines, across 40 stores in five
//! regions, 200 products in eight categories and 20 000 customers in three segments.
//!
//! Invariant: writes only into the directory it is given, and only marks it complete
//! (`_SUCCESS`) once every file is written.

pub mod into_warehouse;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{Datelike, Duration, NaiveDate, Weekday};
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// The marker file written last.
pub const COMPLETE_MARKER: &str = "_SUCCESS";

const REGIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "East",
        &[
            ("Shanghai", "上海"),
            ("Hangzhou", "杭州"),
            ("Nanjing", "南京"),
            ("Suzhou", "苏州"),
        ],
    ),
    (
        "North",
        &[
            ("Beijing", "北京"),
            ("Tianjin", "天津"),
            ("Shenyang", "沈阳"),
        ],
    ),
    (
        "South",
        &[
            ("Guangzhou", "广州"),
            ("Shenzhen", "深圳"),
            ("Xiamen", "厦门"),
        ],
    ),
    (
        "West",
        &[("Chengdu", "成都"), ("Chongqing", "重庆"), ("Xian", "西安")],
    ),
    (
        "Central",
        &[
            ("Wuhan", "武汉"),
            ("Changsha", "长沙"),
            ("Zhengzhou", "郑州"),
        ],
    ),
];
const CATEGORIES: &[(&str, i64, i64)] = &[
    ("Electronics", 9_900, 299_900),
    ("Home", 1_900, 59_900),
    ("Apparel", 2_900, 89_900),
    ("Beauty", 1_900, 49_900),
    ("Grocery", 300, 9_900),
    ("Sports", 2_900, 149_900),
    ("Toys", 1_900, 39_900),
    ("Books", 1_500, 19_900),
];
const STORES: usize = 40;
const PRODUCTS: usize = 200;
const CUSTOMERS: usize = 20_000;
const SEGMENTS: &[(&str, f64)] = &[
    ("Consumer", 0.60),
    ("Corporate", 0.25),
    ("Small Business", 0.15),
];

/// Is the demo data in `dir` complete?
pub fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).exists() && dir.join(TARGETS_FILE).exists()
}

/// The revenue targets file (a plan per month and region, in the demo's data).
pub const TARGETS_FILE: &str = "targets.csv";

fn io(context: &str, e: impl std::fmt::Display) -> Error {
    Error::io(context.to_string(), std::io::Error::other(e.to_string()))
}

struct Store {
    region: &'static str,
    city: &'static str,
}

struct Product {
    price: i64,
    cost: i64,
}

/// Generate the demo files into `dir`, reporting progress through `progress` (0..=100).
pub fn generate(dir: &Path, mut progress: impl FnMut(&str, u32)) -> Result<DemoSummary> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let _ = std::fs::remove_file(dir.join(COMPLETE_MARKER));
    let mut rng = ChaCha8Rng::seed_from_u64(20_220_101);

    // Stores.
    let mut stores = Vec::new();
    let (mut ids, mut names, mut cities, mut regions, mut opened) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Date32Builder::new(),
    );
    for i in 0..STORES {
        let (region, cities_of) = REGIONS[i % REGIONS.len()];
        let (city, city_cn) = cities_of[(i / REGIONS.len()) % cities_of.len()];
        let id = i64::try_from(i + 1).unwrap_or(0);
        ids.append_value(id);
        names.append_value(format!("{city_cn}{}号店", i / REGIONS.len() + 1));
        cities.append_value(city);
        regions.append_value(region);
        opened.append_value(
            days(NaiveDate::from_ymd_opt(2015, 1, 1).unwrap_or_default())
                + rng.random_range(0..2000),
        );
        stores.push(Store { region, city });
    }
    write_parquet(
        &dir.join("stores.parquet"),
        vec![
            ("store_id", Arc::new(ids.finish()) as ArrayRef),
            ("store_name", Arc::new(names.finish())),
            ("city", Arc::new(cities.finish())),
            ("region", Arc::new(regions.finish())),
            ("opened_date", Arc::new(opened.finish())),
        ],
    )?;

    // Products.
    let mut products = Vec::new();
    let (mut ids, mut names, mut cats, mut prices, mut costs) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        decimal(10, 2),
        decimal(10, 2),
    );
    for i in 0..PRODUCTS {
        let (category, low, high) = CATEGORIES[i % CATEGORIES.len()];
        let price = rng.random_range(low..=high) / 10 * 10 - 10 + 9;
        let cost = price * rng.random_range(45..80) / 100;
        ids.append_value(i64::try_from(i + 1).unwrap_or(0));
        names.append_value(format!("{category} {:03}", i / CATEGORIES.len() + 1));
        cats.append_value(category);
        prices.append_value(i128::from(price));
        costs.append_value(i128::from(cost));
        products.push(Product { price, cost });
    }
    write_parquet(
        &dir.join("products.parquet"),
        vec![
            ("product_id", Arc::new(ids.finish()) as ArrayRef),
            ("product_name", Arc::new(names.finish())),
            ("category", Arc::new(cats.finish())),
            ("list_price", Arc::new(prices.finish())),
            ("unit_cost", Arc::new(costs.finish())),
        ],
    )?;

    // Customers (CSV, to exercise CSV sources).
    let start = NaiveDate::from_ymd_opt(2022, 1, 1).unwrap_or_default();
    let end = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap_or_default();
    {
        let path = dir.join("customers.csv");
        let file = File::create(&path)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        let mut w = BufWriter::new(file);
        let mut line = |s: String| {
            w.write_all(s.as_bytes())
                .map_err(|e| Error::io("cannot write customers.csv", e))
        };
        line("customer_id,customer_name,segment,city,signup_date\n".into())?;
        for i in 0..CUSTOMERS {
            let r: f64 = rng.random();
            let mut acc = 0.0;
            let segment = SEGMENTS
                .iter()
                .find(|(_, p)| {
                    acc += p;
                    r < acc
                })
                .map_or("Consumer", |(s, _)| s);
            let store = &stores[rng.random_range(0..STORES)];
            let signup = NaiveDate::from_ymd_opt(2019, 1, 1).unwrap_or_default()
                + Duration::days(rng.random_range(0..(365 * 5 + 300)));
            line(format!(
                "{},Customer {:05},{},{},{}\n",
                i + 1,
                i + 1,
                segment,
                store.city,
                signup.format("%Y-%m-%d")
            ))?;
        }
    }
    progress("customers", 5);

    // Orders and order lines.
    let total_days = (end - start).num_days() + 1;
    let mut orders = OrderBuilders::default();
    let mut lines = LineBuilders::default();
    let mut order_id: i64 = 0;
    let mut line_id: i64 = 0;
    let mut orders_writer = ParquetSink::new(&dir.join("orders.parquet"), OrderBuilders::schema())?;
    let mut lines_writer =
        ParquetSink::new(&dir.join("order_lines.parquet"), LineBuilders::schema())?;
    // Net revenue of orders not cancelled per (year, month, region), for the targets.
    let mut actual: std::collections::BTreeMap<(i32, u32, &str), i64> = Default::default();
    for d in 0..total_days {
        let date = start + Duration::days(d);
        let n = orders_on(date, &mut rng);
        for _ in 0..n {
            order_id += 1;
            let customer = rng.random_range(0..CUSTOMERS);
            let store = pick_store(&stores, &mut rng);
            // Online and app grow year by year at the expense of stores.
            let shift = years_since_start(date) * 0.05;
            let channel_roll: f64 = rng.random();
            let channel = if channel_roll < 0.5 - shift {
                "store"
            } else if channel_roll < 0.85 - shift / 2.0 {
                "online"
            } else {
                "app"
            };
            let status_roll: f64 = rng.random();
            let status = if status_roll < 0.92 {
                "completed"
            } else if status_roll < 0.97 {
                "returned"
            } else {
                "cancelled"
            };
            let shipping: i64 = if channel == "store" {
                0
            } else {
                [0, 800, 1200][rng.random_range(0..3)]
            };
            let seconds = rng.random_range(8 * 3600..22 * 3600);
            let promo_day = is_promo_day(date);
            let line_count = 1 + rng.random_range(0..3) + rng.random_range(0..3);
            let mut amount: i64 = 0;
            for _ in 0..line_count {
                line_id += 1;
                let p = rng.random_range(0..PRODUCTS);
                let quantity: i32 = if rng.random_bool(0.7) {
                    1
                } else {
                    rng.random_range(2..=5)
                };
                let is_promo = promo_day || rng.random_bool(0.1);
                let price = products[p].price;
                let gross = price * i64::from(quantity);
                let discount = if is_promo {
                    gross * rng.random_range(5..30) / 100
                } else {
                    0
                };
                amount += gross - discount;
                lines.push(
                    line_id,
                    order_id,
                    i64::try_from(p + 1).unwrap_or(0),
                    quantity,
                    price,
                    discount,
                    products[p].cost,
                    is_promo,
                );
            }
            if status != "cancelled" {
                *actual
                    .entry((date.year(), date.month(), stores[store].region))
                    .or_default() += amount;
            }
            let ts = date.and_hms_opt(0, 0, 0).unwrap_or_default() + Duration::seconds(seconds);
            orders.push(
                order_id,
                days(date),
                ts.and_utc().timestamp_micros(),
                i64::try_from(customer + 1).unwrap_or(0),
                i64::try_from(store + 1).unwrap_or(0),
                channel,
                status,
                shipping,
                amount,
            );
        }
        if orders.len() >= 65_536 {
            orders_writer.write(orders.finish())?;
        }
        if lines.len() >= 65_536 {
            lines_writer.write(lines.finish())?;
        }
        if d % 30 == 0 {
            progress(
                "orders",
                5 + u32::try_from(d * 95 / total_days).unwrap_or(0),
            );
        }
    }
    orders_writer.write(orders.finish())?;
    lines_writer.write(lines.finish())?;
    orders_writer.close()?;
    lines_writer.close()?;
    write_targets(&dir.join(TARGETS_FILE), &actual)?;
    File::create(dir.join(COMPLETE_MARKER))
        .map_err(|e| Error::io("cannot write the completion marker", e))?;
    progress("done", 100);
    Ok(DemoSummary {
        orders: order_id,
        order_lines: line_id,
    })
}

/// Revenue targets per month and region: the first year's plan is near its actual, later
/// years plan growth over the same month a year earlier (with the noise of any plan).
fn write_targets(
    path: &Path,
    actual: &std::collections::BTreeMap<(i32, u32, &str), i64>,
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(2_024);
    let file =
        File::create(path).map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    let mut w = BufWriter::new(file);
    let mut out = String::from("target_id,month,region,revenue_target\n");
    for (id, (&(year, month, region), &cents)) in actual.iter().enumerate() {
        let basis = actual
            .get(&(year - 1, month, region))
            .map_or(cents as f64 * rng.random_range(0.95..1.05), |&last| {
                last as f64 * rng.random_range(1.05..1.20)
            });
        let target = (basis / 100_000.0).round() * 1_000.0; // whole thousands
        out.push_str(&format!(
            "{},{year:04}-{month:02}-01,{region},{target:.2}\n",
            id + 1
        ));
    }
    w.write_all(out.as_bytes())
        .and_then(|()| w.flush())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
}

/// What the generator wrote.
#[derive(Debug, Clone, Copy)]
pub struct DemoSummary {
    /// Number of orders.
    pub orders: i64,
    /// Number of order lines.
    pub order_lines: i64,
}

/// Bigger regions take more orders: East and South lead, West trails.
fn region_weight(region: &str) -> f64 {
    match region {
        "East" => 1.6,
        "South" => 1.3,
        "North" => 1.0,
        "Central" => 0.8,
        _ => 0.6,
    }
}

fn pick_store(stores: &[Store], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = stores.iter().map(|s| region_weight(s.region)).sum();
    let mut roll = rng.random_range(0.0..total);
    for (i, s) in stores.iter().enumerate() {
        roll -= region_weight(s.region);
        if roll < 0.0 {
            return i;
        }
    }
    stores.len() - 1
}

fn years_since_start(date: NaiveDate) -> f64 {
    f64::from(date.year() - 2022) + f64::from(date.ordinal()) / 365.0
}

fn days(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).unwrap_or(0)
}

fn is_promo_day(date: NaiveDate) -> bool {
    (date.month() == 11 && (9..=11).contains(&date.day()))
        || (date.month() == 6 && (16..=18).contains(&date.day()))
}

/// Orders on a day: growth, weekly and yearly seasonality, sales events, noise.
fn orders_on(date: NaiveDate, rng: &mut ChaCha8Rng) -> i64 {
    let years = years_since_start(date);
    let mut level = 330.0 * (1.0 + 0.18 * years);
    level *= match date.weekday() {
        Weekday::Sat | Weekday::Sun => 1.35,
        Weekday::Fri => 1.1,
        _ => 1.0,
    };
    level *= match date.month() {
        1 | 2 => 0.8,
        11 => 1.35,
        12 => 1.25,
        6 => 1.1,
        7 | 8 => 0.95,
        _ => 1.0,
    };
    if date.month() == 11 && date.day() == 11 {
        level *= 4.0;
    } else if date.month() == 6 && date.day() == 18 {
        level *= 2.5;
    } else if is_promo_day(date) {
        level *= 1.6;
    }
    let noise: f64 = rng.random_range(0.85..1.15);
    (level * noise).round() as i64
}

fn decimal(precision: u8, scale: i8) -> Decimal128Builder {
    Decimal128Builder::new().with_data_type(DataType::Decimal128(precision, scale))
}

#[derive(Default)]
struct OrderBuilders {
    order_id: Int64Builder,
    order_date: Date32Builder,
    order_ts: TimestampMicrosecondBuilder,
    customer_id: Int64Builder,
    store_id: Int64Builder,
    channel: StringBuilder,
    status: StringBuilder,
    shipping_fee: Option<Decimal128Builder>,
    order_amount: Option<Decimal128Builder>,
    rows: usize,
}

impl OrderBuilders {
    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, false),
            Field::new("order_date", DataType::Date32, false),
            Field::new(
                "order_ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("customer_id", DataType::Int64, false),
            Field::new("store_id", DataType::Int64, false),
            Field::new("channel", DataType::Utf8, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("shipping_fee", DataType::Decimal128(10, 2), false),
            Field::new("order_amount", DataType::Decimal128(12, 2), false),
        ]))
    }
    fn len(&self) -> usize {
        self.rows
    }
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: i64,
        date: i32,
        ts: i64,
        customer: i64,
        store: i64,
        channel: &str,
        status: &str,
        shipping: i64,
        amount: i64,
    ) {
        self.order_id.append_value(id);
        self.order_date.append_value(date);
        self.order_ts.append_value(ts);
        self.customer_id.append_value(customer);
        self.store_id.append_value(store);
        self.channel.append_value(channel);
        self.status.append_value(status);
        self.shipping_fee
            .get_or_insert_with(|| decimal(10, 2))
            .append_value(i128::from(shipping));
        self.order_amount
            .get_or_insert_with(|| decimal(12, 2))
            .append_value(i128::from(amount));
        self.rows += 1;
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        vec![
            Arc::new(self.order_id.finish()),
            Arc::new(self.order_date.finish()),
            Arc::new(self.order_ts.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.store_id.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.status.finish()),
            Arc::new(
                self.shipping_fee
                    .get_or_insert_with(|| decimal(10, 2))
                    .finish(),
            ),
            Arc::new(
                self.order_amount
                    .get_or_insert_with(|| decimal(12, 2))
                    .finish(),
            ),
        ]
    }
}

#[derive(Default)]
struct LineBuilders {
    line_id: Int64Builder,
    order_id: Int64Builder,
    product_id: Int64Builder,
    quantity: Int32Builder,
    unit_price: Option<Decimal128Builder>,
    discount: Option<Decimal128Builder>,
    unit_cost: Option<Decimal128Builder>,
    is_promo: BooleanBuilder,
    rows: usize,
}

impl LineBuilders {
    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("line_id", DataType::Int64, false),
            Field::new("order_id", DataType::Int64, false),
            Field::new("product_id", DataType::Int64, false),
            Field::new("quantity", DataType::Int32, false),
            Field::new("unit_price", DataType::Decimal128(10, 2), false),
            Field::new("discount", DataType::Decimal128(10, 2), false),
            Field::new("unit_cost", DataType::Decimal128(10, 2), false),
            Field::new("is_promo", DataType::Boolean, false),
        ]))
    }
    fn len(&self) -> usize {
        self.rows
    }
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        id: i64,
        order: i64,
        product: i64,
        quantity: i32,
        price: i64,
        discount: i64,
        cost: i64,
        promo: bool,
    ) {
        self.line_id.append_value(id);
        self.order_id.append_value(order);
        self.product_id.append_value(product);
        self.quantity.append_value(quantity);
        self.unit_price
            .get_or_insert_with(|| decimal(10, 2))
            .append_value(i128::from(price));
        self.discount
            .get_or_insert_with(|| decimal(10, 2))
            .append_value(i128::from(discount));
        self.unit_cost
            .get_or_insert_with(|| decimal(10, 2))
            .append_value(i128::from(cost));
        self.is_promo.append_value(promo);
        self.rows += 1;
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        vec![
            Arc::new(self.line_id.finish()),
            Arc::new(self.order_id.finish()),
            Arc::new(self.product_id.finish()),
            Arc::new(self.quantity.finish()),
            Arc::new(
                self.unit_price
                    .get_or_insert_with(|| decimal(10, 2))
                    .finish(),
            ),
            Arc::new(self.discount.get_or_insert_with(|| decimal(10, 2)).finish()),
            Arc::new(
                self.unit_cost
                    .get_or_insert_with(|| decimal(10, 2))
                    .finish(),
            ),
            Arc::new(self.is_promo.finish()),
        ]
    }
}

struct ParquetSink {
    writer: ArrowWriter<File>,
    schema: Arc<Schema>,
    path: std::path::PathBuf,
}

impl ParquetSink {
    fn new(path: &Path, schema: Arc<Schema>) -> Result<ParquetSink> {
        let file = File::create(path)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
        let writer = ArrowWriter::try_new(file, schema.clone(), None)
            .map_err(|e| io("parquet writer", e))?;
        Ok(ParquetSink {
            writer,
            schema,
            path: path.to_path_buf(),
        })
    }
    fn write(&mut self, columns: Vec<ArrayRef>) -> Result<()> {
        if columns.first().is_none_or(|c| c.is_empty()) {
            return Ok(());
        }
        let batch =
            RecordBatch::try_new(self.schema.clone(), columns).map_err(|e| io("demo batch", e))?;
        self.writer
            .write(&batch)
            .map_err(|e| io(&format!("cannot write {}", self.path.display()), e))
    }
    fn close(self) -> Result<()> {
        self.writer
            .close()
            .map(|_| ())
            .map_err(|e| io("cannot finish parquet file", e))
    }
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<()> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
            .collect::<Vec<_>>(),
    ));
    let mut sink = ParquetSink::new(path, schema)?;
    sink.write(columns.into_iter().map(|(_, a)| a).collect())?;
    sink.close()
}
