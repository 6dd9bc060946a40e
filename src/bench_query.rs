//! `artstore bench query`: the query role's search against PostgreSQL full-text search as
//! the original design planned it (a tsvector column with a GIN index,
//! `websearch_to_tsquery`, `ts_rank`, `ts_headline`), in one run, on this machine, over the
//! same documents.
//!
//! 1. a generated corpus (seeded, so every run has the same documents) plus a sample of
//!    real prose, loaded into both engines: build time and size;
//! 2. ArtStore's indexing rate for 4 KiB texts, into an index of its own;
//! 3. both served over HTTP on loopback (ArtStore: the real query role router; PostgreSQL:
//!    a small endpoint in this process doing the same work: total, top 10 with
//!    highlights, facets): a mixed query set at 1 and 8 clients, QPS and p50/p99/p99.9;
//! 4. relevance on known-item queries (success@10, MRR) over the same HTTP endpoints.

use anyhow::Context as _;
use artstore_query::config::QueryConfig;
use artstore_query::doc::{DocInput, Extraction};
use artstore_query::extractor::Extractor;
use artstore_query::index::{Applied, SearchIndex, layout};
use artstore_query::server::{QueryDeps, QueryServer};
use artstore_shared::Clock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner, TokenVerifier, VerifierConfig};
use artstore_shared::clients::ServiceToken;
use artstore_shared::clock::SystemClock;
use artstore_shared::discovery::{Discovery, ProbeConfig, StaticDiscovery};
use axum::extract::{Query, State};
use axum::response::IntoResponse as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(Debug, Args)]
pub struct QueryBenchArgs {
    /// Generated documents in the corpus (the real-text sample comes on top).
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: usize,
    /// Average text size of a generated document, bytes.
    #[arg(long, default_value_t = 600)]
    pub text_bytes: usize,
    /// PostgreSQL server; a database artstore_bench_fts_<pid> is created on it and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub postgres: String,
    /// Seconds of each load phase (and of each engine's warm-up).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Working folder, new or empty (default: a new folder in the temp dir); removed after.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A smoke test: 20,000 documents, 3 s phases, 5,000 documents of 4 KiB.
    #[arg(long)]
    pub quick: bool,
}

const SEED: u64 = 0x5eed_a575_0001_0001;
const SALT_CORPUS: u64 = 0x636f_7270_7573;
const SALT_4K: u64 = 0x3469_6b62;
/// Generated pseudo-words in the vocabulary.
const PSEUDO_WORDS: usize = 50_000;
/// Pseudo-words shuffled in among the English and Russian words (the rest rank below).
const MID_PSEUDO: usize = 3_000;
/// Zipf–Mandelbrot: the weight of rank r is 1 / (r + Q)^S.
const ZIPF_S: f64 = 1.0;
const ZIPF_Q: f64 = 2.7;
/// Share of English and pseudo-word occurrences written in the plural.
const PLURAL_SHARE: f64 = 0.2;
/// ArtStore commits while building, every this many documents.
const COMMIT_EVERY: usize = 50_000;
const KNOWN_ITEMS: usize = 500;
const REAL_DOCS: usize = 300;
const REAL_KNOWN_ITEMS: usize = 100;
/// Share of known-item words written in another inflection than the document's.
const OTHER_FORM_SHARE: f64 = 0.25;
/// Queries of the mixed set (cycled through by the load phases).
const QUERY_SET: usize = 5_000;
const P99_GOAL_MS: f64 = 20.0;
const QPS_GOAL_RATIO: f64 = 5.0;
const INDEX_RATE_GOAL: f64 = 5_000.0;
/// 2015-01-01T00:00:00Z and the seconds to 2026-01-01.
const CREATED_FROM: i64 = 1_420_070_400;
const CREATED_SPAN: usize = 347_155_200;
const COMPLETE_PAYLOAD: &str = r#"{"reindex":{"done":[],"cursors":{},"complete":true}}"#;

/// (content type, extension, weight).
const CONTENT_TYPES: &[(&str, &str, u32)] = &[
    ("application/pdf", "pdf", 30),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx", 20),
    ("text/plain", "txt", 15),
    ("message/rfc822", "eml", 10),
    ("text/html", "html", 8),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx", 7),
    ("text/markdown", "md", 5),
    ("application/vnd.oasis.opendocument.text", "odt", 5),
];
const TEXT_PLAIN: u8 = 2;

const TAGS: &[&str] = &[
    "finance",
    "legal",
    "hr",
    "sales",
    "marketing",
    "operations",
    "it",
    "security",
    "compliance",
    "audit",
    "procurement",
    "logistics",
    "contracts",
    "invoices",
    "reports",
    "minutes",
    "correspondence",
    "projects",
    "research",
    "engineering",
    "support",
    "archive",
    "confidential",
    "public",
    "internal",
    "draft",
    "final",
    "board",
    "tax",
    "insurance",
];

/// English stop words: the head of the Zipf ranking; never used in queries.
const STOP_WORDS: &str = "the of and to a in is that for it as was with be by on not he this are or his \
from at which but have an they you were her she there been one all we their has would when if so no will \
more can who said them what about out up into some than other then its these two may first any my now such \
like our over me even most made after also did many before must through where much your way well down \
should because each just those how too very own same both being under never while might us off since \
against again once here why few nor only do does doing am him himself herself itself themselves ourselves \
yourself whom having had until during above below further could i its whose";

/// Common English content words.
const ENGLISH_WORDS: &str = "time people year work day state world life man government country business \
company family group problem service part place case week point number system program question area money \
story fact month lot right study book job word issue side kind head house friend father power hour game \
line end member law car city community name president team minute idea body information back parent face \
level office door health person art war history party result change morning reason research girl moment \
air teacher force education contract invoice payment report meeting budget policy customer order delivery \
account agreement project review quarterly annual tax salary employee manager department product price cost \
supply supplier quality audit insurance claim legal court letter request approval schedule plan risk market \
sales revenue profit loss bank transfer loan credit balance statement receipt purchase warehouse inventory \
shipment freight customs license permit safety training hiring vacation benefit pension medical patient \
doctor hospital school student data software network server security access password incident maintenance \
repair equipment vehicle fuel energy electricity water building construction property rent lease tenant \
owner board director decision vote share stock dividend capital investment fund grant donation partner \
client vendor consultant proposal tender bid specification design drawing engineering test analysis summary \
draft final version update support ticket complaint feedback survey campaign marketing brand website email \
phone address region european international national local federal ministry regulation compliance privacy \
protection record archive document file copy signature stamp seal notary certificate registration \
application form notice deadline penalty fine interest rate currency euro dollar exchange judge lawyer \
witness evidence hearing appeal settlement dispute liability damage warranty refund discount margin forecast \
target strategy growth export import logistics transport route port airport train flight hotel travel \
expense conference presentation workshop seminar course exam grade library museum science laboratory \
experiment sample measurement standard procedure manual guide instruction checklist template";

/// Russian words, each in several inflected forms (so that stemming matters).
const RUSSIAN_WORDS: &str = "договор договора договоры договором договоров
счет счета счетов счетом
оплата оплаты оплату оплатой
поставка поставки поставку поставок
отчет отчета отчеты отчетов
компания компании компанию компаний
документ документа документы документов
сотрудник сотрудника сотрудники сотрудников
заказ заказа заказы заказов
клиент клиента клиенты клиентов
услуга услуги услугу услуг
проект проекта проекты проектов
решение решения решений решением
задача задачи задачу задач
срок срока сроки сроков
цена цены цену цен
товар товара товары товаров
банк банка банки банков
перевод перевода переводы переводом
налог налога налоги налогов
письмо письма письмом
встреча встречи встречу встреч
бюджет бюджета бюджеты бюджетом
качество качества качеством
работа работы работу работой
управление управления управлением
система системы систему систем
склад склада склады складов
закупка закупки закупку закупок
поставщик поставщика поставщики поставщиков
претензия претензии претензию претензий
акт акта акты актов
приказ приказа приказы приказов
отдел отдела отделы отделов
директор директора директором
сумма суммы сумму сумм
подпись подписи подписью
печать печати печатью
доставка доставки доставку доставкой
страхование страхования страхованием";

const ONSETS: &[&str] = &[
    "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "pr",
    "tr", "st", "sl", "pl", "bl", "kl", "sh", "ch", "th", "", "",
];
const VOWELS: &[&str] = &["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "ou", "io"];
const CODAS: &[&str] = &["", "", "", "", "n", "r", "l", "s", "m", "t", "nd", "rk", "st"];

/// Public-domain prose for the real-text sample: the Declaration of Independence (1776),
/// the Gettysburg Address (1863), and the openings of Pride and Prejudice, A Tale of Two
/// Cities, Moby-Dick, Alice's Adventures in Wonderland and Anna Karenina (in Russian).
const REAL_TEXT: &str = r#"When in the Course of human events, it becomes necessary for one people to dissolve the political bands which have connected them with another, and to assume among the powers of the earth, the separate and equal station to which the Laws of Nature and of Nature's God entitle them, a decent respect to the opinions of mankind requires that they should declare the causes which impel them to the separation.

We hold these truths to be self-evident, that all men are created equal, that they are endowed by their Creator with certain unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. That to secure these rights, Governments are instituted among Men, deriving their just powers from the consent of the governed. That whenever any Form of Government becomes destructive of these ends, it is the Right of the People to alter or to abolish it, and to institute new Government, laying its foundation on such principles and organizing its powers in such form, as to them shall seem most likely to effect their Safety and Happiness.

Prudence, indeed, will dictate that Governments long established should not be changed for light and transient causes; and accordingly all experience hath shewn, that mankind are more disposed to suffer, while evils are sufferable, than to right themselves by abolishing the forms to which they are accustomed. But when a long train of abuses and usurpations, pursuing invariably the same Object evinces a design to reduce them under absolute Despotism, it is their right, it is their duty, to throw off such Government, and to provide new Guards for their future security. Such has been the patient sufferance of these Colonies; and such is now the necessity which constrains them to alter their former Systems of Government. The history of the present King of Great Britain is a history of repeated injuries and usurpations, all having in direct object the establishment of an absolute Tyranny over these States. To prove this, let Facts be submitted to a candid world.

He has refused his Assent to Laws, the most wholesome and necessary for the public good. He has forbidden his Governors to pass Laws of immediate and pressing importance, unless suspended in their operation till his Assent should be obtained; and when so suspended, he has utterly neglected to attend to them. He has refused to pass other Laws for the accommodation of large districts of people, unless those people would relinquish the right of Representation in the Legislature, a right inestimable to them and formidable to tyrants only.

He has called together legislative bodies at places unusual, uncomfortable, and distant from the depository of their public Records, for the sole purpose of fatiguing them into compliance with his measures. He has dissolved Representative Houses repeatedly, for opposing with manly firmness his invasions on the rights of the people. He has erected a multitude of New Offices, and sent hither swarms of Officers to harrass our people, and eat out their substance. He has kept among us, in times of peace, Standing Armies without the Consent of our legislatures. He has affected to render the Military independent of and superior to the Civil power.

We, therefore, the Representatives of the united States of America, in General Congress, Assembled, appealing to the Supreme Judge of the world for the rectitude of our intentions, do, in the Name, and by Authority of the good People of these Colonies, solemnly publish and declare, That these United Colonies are, and of Right ought to be Free and Independent States. And for the support of this Declaration, with a firm reliance on the protection of divine Providence, we mutually pledge to each other our Lives, our Fortunes and our sacred Honor.

Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a final resting place for those who here gave their lives that that nation might live. It is altogether fitting and proper that we should do this.

But, in a larger sense, we can not dedicate, we can not consecrate, we can not hallow this ground. The brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or detract. The world will little note, nor long remember what we say here, but it can never forget what they did here. It is for us the living, rather, to be dedicated here to the unfinished work which they who fought here have thus far so nobly advanced. It is rather for us to be here dedicated to the great task remaining before us, that from these honored dead we take increased devotion to that cause for which they gave the last full measure of devotion, that we here highly resolve that these dead shall not have died in vain, that this nation, under God, shall have a new birth of freedom, and that government of the people, by the people, for the people, shall not perish from the earth.

It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters. "My dear Mr. Bennet," said his lady to him one day, "have you heard that Netherfield Park is let at last?" Mr. Bennet replied that he had not. "But it is," returned she; "for Mrs. Long has just been here, and she told me all about it." Mr. Bennet made no answer. "Do you not want to know who has taken it?" cried his wife impatiently. "You want to tell me, and I have no objection to hearing it." This was invitation enough.

It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the other way. In short, the period was so far like the present period, that some of its noisiest authorities insisted on its being received, for good or for evil, in the superlative degree of comparison only.

There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king with a large jaw and a queen with a fair face, on the throne of France. In both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, that things in general were settled for ever.

Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little and see the watery part of the world. It is a way I have of driving off the spleen and regulating the circulation. Whenever I find myself growing grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself involuntarily pausing before coffin warehouses, and bringing up the rear of every funeral I meet; and especially whenever my hypos get such an upper hand of me, that it requires a strong moral principle to prevent me from deliberately stepping into the street, and methodically knocking people's hats off, then, I account it high time to get to sea as soon as I can. This is my substitute for pistol and ball. With a philosophical flourish Cato throws himself upon his sword; I quietly take to the ship. There is nothing surprising in this. If they but knew it, almost all men in their degree, some time or other, cherish very nearly the same feelings towards the ocean with me.

Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it, "and what is the use of a book," thought Alice, "without pictures or conversations?" So she was considering in her own mind, as well as she could, for the hot day made her feel very sleepy and stupid, whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her. There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear the Rabbit say to itself, "Oh dear! Oh dear! I shall be late!" But when the Rabbit actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, Alice started to her feet, for it flashed across her mind that she had never before seen a rabbit with either a waistcoat-pocket, or a watch to take out of it, and burning with curiosity, she ran across the field after it.

Все счастливые семьи похожи друг на друга, каждая несчастливая семья несчастлива по-своему. Все смешалось в доме Облонских. Жена узнала, что муж был в связи с бывшею в их доме француженкою-гувернанткой, и объявила мужу, что не может жить с ним в одном доме. Положение это продолжалось уже третий день и мучительно чувствовалось и самими супругами, и всеми членами семьи, и домочадцами.

Все члены семьи и домочадцы чувствовали, что нет смысла в их сожительстве и что на каждом постоялом дворе случайно сошедшиеся люди более связаны между собой, чем они, члены семьи и домочадцы Облонских. Жена не выходила из своих комнат, мужа третий день не было дома. Дети бегали по всему дому, как потерянные; англичанка поссорилась с экономкой и написала записку приятельнице, прося приискать ей новое место; повар ушел еще вчера со двора, во время обеда; черная кухарка и кучер просили расчета."#;

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, fast, and the same numbers on every platform and every build.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng(seed);
        r.next_u64();
        r
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

fn doc_seed(salt: u64, i: usize) -> u64 {
    SEED ^ salt ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// `r` = how many times faster (or, below 1, slower).
fn faster(r: f64) -> String {
    if r >= 1.0 { format!("{r:.2}x faster") } else { format!("{:.2}x slower", 1.0 / r.max(1e-9)) }
}

/// The load average, to show other work on the machine.
fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

fn on_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = if on_terminal() { ProgressBar::new(len) } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("  {msg} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

fn spinner(what: String) -> ProgressBar {
    let pb = if on_terminal() { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    pb.set_style(
        ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.set_message(what);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn capitalised(out: &mut String, w: &str) {
    let mut c = w.chars();
    if let Some(first) = c.next() {
        out.extend(first.to_uppercase());
        out.push_str(c.as_str());
    }
}

/// Lower-cased alphanumeric words of at least 3 characters.
fn words_of(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| w.chars().count() >= 3).map(str::to_lowercase)
}

// ---------------------------------------------------------------------------------------
// The vocabulary and the corpus
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordKind {
    Stop,
    English,
    Russian,
    Pseudo,
}

/// Words by Zipf rank, each with its surface forms (base first).
struct Vocab {
    forms: Vec<Vec<String>>,
    kinds: Vec<WordKind>,
    /// Cumulative, normalised Zipf weights by rank.
    cdf: Vec<f64>,
    /// Ranks [0, stops) are stop words.
    stops: usize,
    by_surface: HashMap<String, u32>,
}

fn pseudo_word(rng: &mut Rng) -> String {
    let syllables = [2, 2, 2, 3, 3, 3, 3, 4][rng.below(8)];
    let mut w = String::new();
    for _ in 0..syllables {
        w.push_str(ONSETS[rng.below(ONSETS.len())]);
        w.push_str(VOWELS[rng.below(VOWELS.len())]);
        w.push_str(CODAS[rng.below(CODAS.len())]);
    }
    w
}

impl Vocab {
    fn build() -> Vocab {
        let mut rng = Rng::new(SEED ^ 0x0076_6f63_6162);
        let mut seen: HashSet<String> = HashSet::new();
        let mut head: Vec<(Vec<String>, WordKind)> = Vec::new();
        for w in STOP_WORDS.split_whitespace() {
            if seen.insert(w.to_owned()) {
                head.push((vec![w.to_owned()], WordKind::Stop));
            }
        }
        let stops = head.len();
        let mut mid: Vec<(Vec<String>, WordKind)> = Vec::new();
        for w in ENGLISH_WORDS.split_whitespace() {
            if !seen.insert(w.to_owned()) {
                continue;
            }
            let mut forms = vec![w.to_owned()];
            let plural = format!("{w}s");
            if !w.ends_with(['s', 'x', 'y', 'h']) && seen.insert(plural.clone()) {
                forms.push(plural);
            }
            mid.push((forms, WordKind::English));
        }
        for line in RUSSIAN_WORDS.lines() {
            let forms: Vec<String> =
                line.split_whitespace().filter(|f| seen.insert((*f).to_owned())).map(str::to_owned).collect();
            if !forms.is_empty() {
                mid.push((forms, WordKind::Russian));
            }
        }
        let mut pseudo = Vec::with_capacity(PSEUDO_WORDS);
        while pseudo.len() < PSEUDO_WORDS {
            let w = pseudo_word(&mut rng);
            let plural = format!("{w}s");
            if !(4..=14).contains(&w.len()) || w.ends_with('s') || seen.contains(&w) || seen.contains(&plural) {
                continue;
            }
            seen.insert(w.clone());
            seen.insert(plural.clone());
            pseudo.push((vec![w, plural], WordKind::Pseudo));
        }
        let rest = pseudo.split_off(MID_PSEUDO.min(pseudo.len()));
        mid.extend(pseudo);
        rng.shuffle(&mut mid);
        let all: Vec<(Vec<String>, WordKind)> = head.into_iter().chain(mid).chain(rest).collect();
        let mut cdf = Vec::with_capacity(all.len());
        let mut acc = 0.0;
        for r in 0..all.len() {
            acc += 1.0 / (r as f64 + ZIPF_Q).powf(ZIPF_S);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        let mut by_surface = HashMap::new();
        for (rank, (forms, _)) in all.iter().enumerate() {
            for f in forms {
                by_surface.insert(f.clone(), rank as u32);
            }
        }
        let (forms, kinds) = all.into_iter().unzip();
        Vocab { forms, kinds, cdf, stops, by_surface }
    }

    fn count(&self, kind: WordKind) -> usize {
        self.kinds.iter().filter(|k| **k == kind).count()
    }

    fn rank_at(&self, u: f64) -> u32 {
        self.cdf.partition_point(|&c| c <= u).min(self.cdf.len() - 1) as u32
    }

    /// A word by its Zipf weight.
    fn sample(&self, rng: &mut Rng) -> u32 {
        self.rank_at(rng.f64())
    }

    /// A word that is not a stop word, by its Zipf weight.
    fn sample_content(&self, rng: &mut Rng) -> u32 {
        let lo = self.cdf[self.stops - 1];
        self.rank_at(lo + (1.0 - lo) * rng.f64()).max(self.stops as u32)
    }

    fn pick_form(&self, rank: u32, rng: &mut Rng) -> usize {
        let n = self.forms[rank as usize].len();
        match self.kinds[rank as usize] {
            WordKind::Stop => 0,
            WordKind::Russian => rng.below(n),
            WordKind::English | WordKind::Pseudo => usize::from(n > 1 && rng.chance(PLURAL_SHARE)),
        }
    }

    fn is_content(&self, surface: &str) -> bool {
        self.by_surface.get(surface).is_some_and(|&r| self.kinds[r as usize] != WordKind::Stop)
    }
}

/// One document, as both engines get it.
struct Doc {
    id: Uuid,
    name: String,
    /// Index into [`CONTENT_TYPES`].
    ct: u8,
    /// Indexes into [`TAGS`].
    tags: Vec<u8>,
    /// Unix seconds.
    created: i64,
    body: String,
}

fn pick_content_type(rng: &mut Rng) -> usize {
    let total: u32 = CONTENT_TYPES.iter().map(|c| c.2).sum();
    let mut x = rng.below(total as usize) as u32;
    for (i, c) in CONTENT_TYPES.iter().enumerate() {
        if x < c.2 {
            return i;
        }
        x -= c.2;
    }
    0
}

fn pick_tags(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(4);
    let mut tags: Vec<u8> = Vec::with_capacity(n);
    while tags.len() < n {
        let t = rng.below(TAGS.len()) as u8;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// Sentences of 5–16 words until the text is `target` bytes; every word (rank, form) is
/// pushed onto `words`.
fn gen_text(v: &Vocab, rng: &mut Rng, target: usize, words: &mut Vec<(u32, u8)>) -> String {
    let mut s = String::with_capacity(target + 24);
    loop {
        let n = 5 + rng.below(12);
        for i in 0..n {
            let rank = v.sample(rng);
            let form = v.pick_form(rank, rng);
            words.push((rank, form as u8));
            let w = &v.forms[rank as usize][form];
            if i == 0 {
                if !s.is_empty() {
                    s.push(' ');
                }
                capitalised(&mut s, w);
            } else {
                s.push(' ');
                s.push_str(w);
            }
            if s.len() >= target {
                s.push('.');
                return s;
            }
            if i + 1 < n && rng.chance(0.07) {
                s.push(',');
            }
        }
        s.push('.');
    }
}

/// Document `i` of a generated set: the same every time for the same `salt` and `i`.
fn gen_doc(v: &Vocab, salt: u64, i: usize, text_bytes: usize, fixed: bool, words: &mut Vec<(u32, u8)>) -> Doc {
    let mut rng = Rng::new(doc_seed(salt, i));
    let id = uuid::Builder::from_random_bytes(rng.bytes16()).into_uuid();
    let ct = pick_content_type(&mut rng);
    let mut name = String::new();
    for k in 0..3 + rng.below(3) {
        let w = &v.forms[v.sample_content(&mut rng) as usize][0];
        if k == 0 {
            capitalised(&mut name, w);
        } else {
            name.push(' ');
            name.push_str(w);
        }
    }
    name.push('.');
    name.push_str(CONTENT_TYPES[ct].1);
    let tags = pick_tags(&mut rng);
    let created = CREATED_FROM + rng.below(CREATED_SPAN) as i64;
    // Uniform 50–150 % of the asked size: the average is the asked size.
    let target = if fixed { text_bytes } else { text_bytes / 2 + rng.below(text_bytes + 1) };
    let body = gen_text(v, &mut rng, target.max(1), words);
    Doc { id, name, ct: ct as u8, tags, created, body }
}

/// `n` documents (generated on every core) and the document frequency of every word.
fn gen_set(v: &Vocab, salt: u64, n: usize, text_bytes: usize, fixed: bool, pb: &ProgressBar) -> (Vec<Doc>, Vec<u32>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(1);
    let chunk = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (lo, hi) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
                s.spawn(move || {
                    let mut df = vec![0u32; v.forms.len()];
                    let mut docs = Vec::with_capacity(hi - lo);
                    let (mut words, mut ranks) = (Vec::new(), Vec::new());
                    for i in lo..hi {
                        words.clear();
                        let d = gen_doc(v, salt, i, text_bytes, fixed, &mut words);
                        ranks.clear();
                        ranks.extend(words.iter().map(|w| w.0));
                        ranks.sort_unstable();
                        ranks.dedup();
                        for &r in &ranks {
                            df[r as usize] += 1;
                        }
                        docs.push(d);
                        if (i - lo) % 1000 == 999 {
                            pb.inc(1000);
                        }
                    }
                    (docs, df)
                })
            })
            .collect();
        let mut docs = Vec::with_capacity(n);
        let mut df = vec![0u32; v.forms.len()];
        for h in handles {
            let (d, f) = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            docs.extend(d);
            for (a, b) in df.iter_mut().zip(f) {
                *a += b;
            }
        }
        pb.finish_and_clear();
        (docs, df)
    })
}

/// Splits prose into sentences.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let mut cur: Vec<&str> = Vec::new();
        for w in para.split_whitespace() {
            cur.push(w);
            let end = w.trim_end_matches(['"', '\'']);
            if end.ends_with(['.', '?', '!']) && !["Mr.", "Mrs.", "Dr."].contains(&end) {
                out.push(cur.join(" "));
                cur.clear();
            }
        }
        if !cur.is_empty() {
            out.push(cur.join(" "));
        }
    }
    out
}

/// The real-text sample: documents of 3–6 sentences drawn from [`REAL_TEXT`] (in their
/// order there), with the sentences each holds.
fn real_sample(count: usize) -> (Vec<Doc>, Vec<Vec<usize>>, Vec<String>) {
    let sents = sentences(REAL_TEXT);
    let mut rng = Rng::new(SEED ^ 0x7265_616c);
    let mut docs = Vec::with_capacity(count);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let k = 3 + rng.below(4);
        let mut idx: Vec<usize> = (0..k).map(|_| rng.below(sents.len())).collect();
        idx.sort_unstable();
        idx.dedup();
        let body = idx.iter().map(|&i| sents[i].as_str()).collect::<Vec<_>>().join(" ");
        let mut name: String =
            body.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(4).collect::<Vec<_>>().join(" ");
        name.push_str(".txt");
        let id = uuid::Builder::from_random_bytes(rng.bytes16()).into_uuid();
        let tags = pick_tags(&mut rng);
        let created = CREATED_FROM + rng.below(CREATED_SPAN) as i64;
        docs.push(Doc { id, name, ct: TEXT_PLAIN, tags, created, body });
        held.push(idx);
    }
    (docs, held, sents)
}

// ---------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemSet {
    Generated,
    /// Generated, with one Russian word of the document in the query, in its dictionary
    /// form (PostgreSQL's `english` configuration does not stem Russian).
    Russian,
    Real,
}

struct KnownItem {
    q: String,
    target: Uuid,
    set: ItemSet,
}

/// Takes 2–3 words from `band` (sorted rarest first), preferring distinct `group`s.
fn choose_words<T: Clone>(rng: &mut Rng, band: &[(T, usize)]) -> Vec<T> {
    let k = (2 + rng.below(2)).min(band.len());
    let mut order: Vec<usize> = (0..band.len()).collect();
    rng.shuffle(&mut order);
    let mut chosen: Vec<usize> = Vec::new();
    for &i in &order {
        if chosen.len() < k && !chosen.iter().any(|&c| band[c].1 == band[i].1) {
            chosen.push(i);
        }
    }
    for &i in &order {
        if chosen.len() < k && !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen.into_iter().map(|i| band[i].0.clone()).collect()
}

/// The band of candidates (sorted by document frequency) queries draw from: the rarer half
/// of the document's words without the rarest fifth.
fn mid_band<T>(cands: &[T]) -> &[T] {
    let lo = cands.len() / 5;
    let hi = (cands.len() * 3 / 5).max(lo + 3).min(cands.len());
    &cands[lo..hi]
}

/// Known-item queries for generated documents: 2–3 of the document's words, mid-rare; a
/// tenth of them from documents with a Russian word, which the query names in its
/// dictionary form. Answers the queries and how many Russian words differ from the
/// document's form.
fn known_items(
    v: &Vocab,
    df: &[u32],
    n_docs: usize,
    all_docs: usize,
    text_bytes: usize,
    count: usize,
) -> (Vec<KnownItem>, usize) {
    let mut rng = Rng::new(SEED ^ 0x006b_6e6f_776e);
    let mut picked = HashSet::new();
    let mut out = Vec::new();
    let max_df = ((all_docs as f64 * 0.05) as u32).max(2);
    let count = count.min(n_docs / 2);
    let russian_count = count / 10;
    let mut other_form = 0;
    let mut tries = 0;
    while out.len() < count && tries < count * 50 {
        tries += 1;
        let russian = out.len() >= count - russian_count;
        let i = rng.below(n_docs);
        if picked.contains(&i) {
            continue;
        }
        let mut words = Vec::new();
        let d = gen_doc(v, SALT_CORPUS, i, text_bytes, false, &mut words);
        let mut first: HashMap<u32, u8> = HashMap::new();
        for (r, f) in &words {
            if v.kinds[*r as usize] != WordKind::Stop {
                first.entry(*r).or_insert(*f);
            }
        }
        let mut ru: Vec<(u32, u8)> =
            first.iter().filter(|(r, _)| v.kinds[**r as usize] == WordKind::Russian).map(|(r, f)| (*r, *f)).collect();
        if russian && ru.is_empty() {
            continue;
        }
        ru.sort_unstable();
        let mut cands: Vec<(u32, u32, u8)> = first
            .iter()
            .filter(|(r, _)| !russian || v.kinds[**r as usize] != WordKind::Russian)
            .map(|(r, f)| (df[*r as usize], *r, *f))
            .filter(|c| c.0 <= max_df)
            .collect();
        cands.sort_unstable();
        if cands.iter().filter(|c| c.0 >= 2).count() >= 3 {
            cands.retain(|c| c.0 >= 2);
        }
        let band: Vec<((u32, u8), usize)> = mid_band(&cands).iter().map(|c| ((c.1, c.2), c.1 as usize)).collect();
        if band.len() < 2 {
            continue;
        }
        picked.insert(i);
        let mut q: Vec<String> = Vec::new();
        let mut chosen = choose_words(&mut rng, &band);
        if russian {
            chosen.truncate(chosen.len() - 1);
            let (r, f) = ru[rng.below(ru.len())];
            q.push(v.forms[r as usize][0].clone());
            other_form += usize::from(f != 0);
        }
        for (rank, form) in chosen {
            let forms = &v.forms[rank as usize];
            let mut f = usize::from(form);
            if forms.len() > 1 && rng.chance(OTHER_FORM_SHARE) {
                f = (f + 1 + rng.below(forms.len() - 1)) % forms.len();
            }
            q.push(forms[f].clone());
        }
        rng.shuffle(&mut q);
        let set = if russian { ItemSet::Russian } else { ItemSet::Generated };
        out.push(KnownItem { q: q.join(" "), target: d.id, set });
    }
    (out, other_form)
}

/// Known-item queries for the real-text sample: 2–3 mid-rare words, from different
/// sentences of the document where it can.
fn real_known_items(
    v: &Vocab,
    df: &[u32],
    docs: &[Doc],
    held: &[Vec<usize>],
    sents: &[String],
    count: usize,
) -> Vec<KnownItem> {
    let stop = |w: &str| v.by_surface.get(w).is_some_and(|&r| v.kinds[r as usize] == WordKind::Stop);
    let sent_words: Vec<Vec<String>> = sents.iter().map(|s| words_of(s).filter(|w| !stop(w)).collect()).collect();
    let mut real_df: HashMap<&str, u32> = HashMap::new();
    for h in held {
        let set: HashSet<&str> = h.iter().flat_map(|&i| sent_words[i].iter().map(String::as_str)).collect();
        for w in set {
            *real_df.entry(w).or_default() += 1;
        }
    }
    let df_of = |w: &str| real_df.get(w).copied().unwrap_or(0) + v.by_surface.get(w).map_or(0, |&r| df[r as usize]);
    let mut rng = Rng::new(SEED ^ 0x0072_6561_6c6b);
    let mut order: Vec<usize> = (0..docs.len()).collect();
    rng.shuffle(&mut order);
    let mut out = Vec::new();
    for &d in &order {
        if out.len() >= count {
            break;
        }
        let mut seen = HashSet::new();
        let mut cands: Vec<(u32, String, usize)> = Vec::new();
        for &s in &held[d] {
            for w in &sent_words[s] {
                if seen.insert(w.as_str()) {
                    cands.push((df_of(w), w.clone(), s));
                }
            }
        }
        cands.sort_unstable();
        let band: Vec<(String, usize)> = mid_band(&cands).iter().map(|c| (c.1.clone(), c.2)).collect();
        if band.len() < 2 {
            continue;
        }
        let q = choose_words(&mut rng, &band);
        out.push(KnownItem { q: q.join(" "), target: docs[d].id, set: ItemSet::Real });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Word,
    TwoWords,
    Phrase,
    FacetFilter,
    Prefix,
}

/// (kind, label, share in %).
const KINDS: [(Kind, &str, usize); 5] = [
    (Kind::Word, "word", 30),
    (Kind::TwoWords, "two words", 25),
    (Kind::Phrase, "phrase", 15),
    (Kind::FacetFilter, "facet+filter", 15),
    (Kind::Prefix, "prefix", 15),
];

struct LoadQuery {
    kind: Kind,
    q: String,
    content_type: Option<&'static str>,
}

fn word_of(v: &Vocab, rng: &mut Rng) -> String {
    let r = v.sample_content(rng);
    v.forms[r as usize][v.pick_form(r, rng)].clone()
}

/// Two adjacent words of a sentence of a generated document, neither a stop word.
fn phrase_of(v: &Vocab, docs: &[Doc], rng: &mut Rng) -> String {
    let mut fallback = None;
    for _ in 0..200 {
        let d = &docs[rng.below(docs.len())];
        let toks: Vec<&str> = d.body.split(' ').collect();
        if toks.len() < 2 {
            continue;
        }
        let i = rng.below(toks.len() - 1);
        if toks[i].ends_with(['.', ',']) {
            continue;
        }
        let a = toks[i].to_lowercase();
        let b = toks[i + 1].trim_end_matches(['.', ',']).to_lowercase();
        if v.is_content(&a) && v.is_content(&b) {
            return format!("\"{a} {b}\"");
        }
        fallback.get_or_insert_with(|| format!("\"{a} {b}\""));
    }
    fallback.unwrap_or_else(|| format!("\"{}\"", word_of(v, rng)))
}

/// The mixed query set: words drawn by their frequency in the corpus (stop words left
/// out), phrases from the documents, facet + filter, prefixes of 4–5 letters.
fn load_queries(v: &Vocab, docs: &[Doc], count: usize) -> Vec<LoadQuery> {
    let mut rng = Rng::new(SEED ^ 0x6c6f_6164);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let mut x = rng.below(100);
        let mut kind = Kind::Word;
        for (k, _, share) in KINDS {
            if x < share {
                kind = k;
                break;
            }
            x -= share;
        }
        let (q, content_type) = match kind {
            Kind::Word => (word_of(v, &mut rng), None),
            Kind::TwoWords => (format!("{} {}", word_of(v, &mut rng), word_of(v, &mut rng)), None),
            Kind::Phrase => (phrase_of(v, docs, &mut rng), None),
            Kind::FacetFilter => (word_of(v, &mut rng), Some(CONTENT_TYPES[pick_content_type(&mut rng)].0)),
            Kind::Prefix => {
                let mut p = String::new();
                for _ in 0..1000 {
                    let chars: Vec<char> = v.forms[v.sample_content(&mut rng) as usize][0].chars().collect();
                    if chars.len() >= 6 {
                        p = chars[..if chars.len() >= 8 { 5 } else { 4 }].iter().collect();
                        break;
                    }
                }
                (format!("{p}*"), None)
            }
        };
        out.push(LoadQuery { kind, q, content_type });
    }
    out
}

// ---------------------------------------------------------------------------------------
// ArtStore: building the index and serving it
// ---------------------------------------------------------------------------------------

fn doc_input(d: &Doc) -> anyhow::Result<DocInput> {
    let created = chrono::DateTime::from_timestamp(d.created, 0)
        .context("created date out of range")?
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tags: Vec<&str> = d.tags.iter().map(|&t| TAGS[t as usize]).collect();
    let (ct, ext, _) = CONTENT_TYPES[d.ct as usize];
    let raw = json!({
        "schema": "artstore/sidecar/v1", "file_id": d.id, "document_id": d.id, "version": 1, "revision": 1,
        "state": "active", "original_name": d.name, "stored_name": format!("{}.{ext}", d.id.simple()),
        "content_type": ct, "size": d.body.len(),
        "sha256": format!("{:032x}{:032x}", d.id.as_u128(), d.id.as_u128().rotate_left(64)),
        "created_at": created, "created_by": "bench", "updated_at": created, "updated_by": "bench",
        "tags": tags, "metadata": {},
        "retention": {"mode": "none", "legal_hold": false, "disposition": "dispose"},
        "content": {"location": "hot"}
    });
    let sidecar = DocInput::parse_sidecar(&raw).map_err(anyhow::Error::msg)?;
    Ok(DocInput {
        sidecar,
        raw,
        element_id: "se-bench".to_owned(),
        extraction: Extraction::Ok { text: d.body.clone(), format: "text".to_owned(), truncated: false },
    })
}

struct IndexBuild {
    docs: usize,
    /// `Writer::apply` of every document, the commits every [`COMMIT_EVERY`] and the last one.
    index_secs: f64,
    /// Making the inputs (sidecar JSON and its parse); not counted in `index_secs`.
    prep_secs: f64,
    /// `Writer::close`: waiting for the background merges.
    merge_secs: f64,
    bytes: u64,
    /// `doc::detect_language` alone, per document (on a sample, outside the timed part):
    /// `Writer::apply` runs it in the caller's thread.
    detect_secs: f64,
}

impl IndexBuild {
    fn rate(&self) -> f64 {
        self.docs as f64 / self.index_secs.max(1e-9)
    }

    fn build_secs(&self) -> f64 {
        self.index_secs + self.merge_secs
    }
}

/// Indexes `docs` into the index in `dir` through the query role's own writer, as the
/// role's reindex does (inputs are made in batches of 10,000, outside the timed part).
fn build_index(dir: &Path, docs: &[Doc], payload: Option<&str>, pb: &ProgressBar) -> anyhow::Result<IndexBuild> {
    let (index, _) = SearchIndex::open(dir)?;
    let mut w = index.writer(QueryConfig::default().writer_heap_mib << 20)?;
    let (mut index_t, mut prep_t) = (Duration::ZERO, Duration::ZERO);
    let mut indexed = 0;
    for batch in docs.chunks(10_000) {
        let t = Instant::now();
        let inputs = batch.iter().map(doc_input).collect::<anyhow::Result<Vec<_>>>()?;
        prep_t += t.elapsed();
        let t = Instant::now();
        for d in &inputs {
            if w.apply(d) == Applied::Indexed {
                indexed += 1;
            }
        }
        if w.pending() >= COMMIT_EVERY {
            w.commit(None)?;
        }
        index_t += t.elapsed();
        pb.inc(batch.len() as u64);
    }
    let t = Instant::now();
    w.commit(payload.map(str::to_owned))?;
    index_t += t.elapsed();
    let t = Instant::now();
    w.close()?;
    let merge_t = t.elapsed();
    pb.finish_and_clear();
    anyhow::ensure!(indexed == docs.len(), "{} of {} documents indexed", indexed, docs.len());
    drop(index);
    Ok(IndexBuild {
        docs: docs.len(),
        index_secs: index_t.as_secs_f64(),
        prep_secs: prep_t.as_secs_f64(),
        merge_secs: merge_t.as_secs_f64(),
        bytes: dir_size(dir)?,
        detect_secs: detect_cost(docs),
    })
}

/// Seconds `doc::detect_language` takes per document, on up to 10,000 of them.
fn detect_cost(docs: &[Doc]) -> f64 {
    let n = docs.len().min(10_000);
    let t = Instant::now();
    for d in &docs[..n] {
        std::hint::black_box(artstore_query::doc::detect_language(std::hint::black_box(&d.body)));
    }
    t.elapsed().as_secs_f64() / n.max(1) as f64
}

impl IndexBuild {
    /// The diagnostic line on language detection.
    fn detect_line(&self) -> String {
        format!(
            "language detection alone (doc::detect_language, run by Writer::apply in the caller's thread): {:.0} µs per \
             document = {:.0} % of the indexing time",
            self.detect_secs * 1e6,
            100.0 * self.detect_secs * self.docs as f64 / self.index_secs.max(1e-9)
        )
    }
}

struct ArtStore {
    base: String,
    token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The real query role (router, service, writer task) on a loopback port, over the index
/// under `root`, with no elements and no event bus.
async fn start_artstore(keys: &Path, root: &Path, cache_entries: u64) -> anyhow::Result<ArtStore> {
    let signer = LocalSigner::load_or_create(keys)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier =
        Arc::new(TokenVerifier::new(JwksSource::File(keys.join(JWKS_FILE)), VerifierConfig::default(), clock));
    verifier.load().await?;
    let discovery: Arc<dyn Discovery> = Arc::new(StaticDiscovery::start(Vec::new(), ProbeConfig::default()));
    let cfg = QueryConfig { index: Some(root.to_owned()), result_cache_entries: cache_entries, ..Default::default() };
    let deps = QueryDeps {
        verifier,
        token: Some(ServiceToken::Static("unused".to_owned())),
        bus: None,
        extractor: Some(Arc::new(Extractor::in_process(Default::default()))),
        discovery: Some(discovery),
    };
    let server = QueryServer::build(cfg, deps).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(listener, async move {
        let _ = rx.await;
    }));
    let token = signer.issue("bench", &["reader".to_owned()], Duration::from_secs(24 * 3600), chrono::Utc::now())?;
    Ok(ArtStore { base, token, stop, handle })
}

impl ArtStore {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.handle.await?
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: building the baseline and serving it
// ---------------------------------------------------------------------------------------

const PG_TABLE: &str = "CREATE TABLE docs (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    body text NOT NULL,
    content_type text NOT NULL,
    tags text[] NOT NULL,
    created timestamptz NOT NULL,
    tsv tsvector GENERATED ALWAYS AS
        (setweight(to_tsvector('english', coalesce(name, '')), 'A') || to_tsvector('english', body)) STORED
)";

struct PgBuild {
    version: String,
    settings: String,
    load_secs: f64,
    gin_secs: f64,
    btree_secs: f64,
    analyze_secs: f64,
    total_bytes: u64,
    gin_bytes: u64,
}

impl PgBuild {
    fn build_secs(&self) -> f64 {
        self.load_secs + self.gin_secs + self.btree_secs + self.analyze_secs
    }
}

fn copy_text(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn copy_row(out: &mut Vec<u8>, d: &Doc) {
    use std::io::Write as _;
    let _ = write!(out, "{}\t", d.id);
    copy_text(out, &d.name);
    out.push(b'\t');
    copy_text(out, &d.body);
    out.push(b'\t');
    out.extend_from_slice(CONTENT_TYPES[d.ct as usize].0.as_bytes());
    out.push(b'\t');
    let tags: Vec<&str> = d.tags.iter().map(|&t| TAGS[t as usize]).collect();
    let _ = write!(out, "{{{}}}\t", tags.join(","));
    let created = chrono::DateTime::from_timestamp(d.created, 0).unwrap_or_default();
    let _ = writeln!(out, "{}", created.format("%Y-%m-%d %H:%M:%S+00"));
}

async fn pg_exec(conn: &mut PgConnection, sql: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    sqlx::query(AssertSqlSafe(sql.to_owned())).execute(&mut *conn).await.with_context(|| sql.to_owned())?;
    Ok(t.elapsed().as_secs_f64())
}

/// COPY into the table (its generated column computes the tsvector), then the GIN index,
/// the btree indexes and ANALYZE.
async fn build_pg(opts: &PgConnectOptions, docs: &[Doc]) -> anyhow::Result<PgBuild> {
    let mut conn = PgConnection::connect_with(opts).await?;
    let version: String = sqlx::query_scalar("SELECT version()").fetch_one(&mut conn).await?;
    let version = version.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let mut settings = Vec::new();
    for s in ["shared_buffers", "work_mem", "max_parallel_workers_per_gather", "jit"] {
        let v: String = sqlx::query_scalar(AssertSqlSafe(format!("SHOW {s}"))).fetch_one(&mut conn).await?;
        settings.push(format!("{s} {v}"));
    }
    pg_exec(&mut conn, "SET maintenance_work_mem = '1GB'").await?;
    pg_exec(&mut conn, PG_TABLE).await?;
    let pb = bar(docs.len() as u64, "PostgreSQL COPY");
    let t = Instant::now();
    let mut copy = conn.copy_in_raw("COPY docs (id, name, body, content_type, tags, created) FROM STDIN").await?;
    let mut buf = Vec::with_capacity(5 << 20);
    for (i, d) in docs.iter().enumerate() {
        copy_row(&mut buf, d);
        if buf.len() >= 4 << 20 {
            copy.send(std::mem::replace(&mut buf, Vec::with_capacity(5 << 20))).await?;
            pb.set_position(i as u64 + 1);
        }
    }
    if !buf.is_empty() {
        copy.send(buf).await?;
    }
    let rows = copy.finish().await?;
    let load_secs = t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    anyhow::ensure!(rows == docs.len() as u64, "COPY loaded {rows} of {} rows", docs.len());
    println!("  COPY of {} rows (tsvector computed by the generated column) in {load_secs:.1} s", thousands(rows));
    let sp = spinner("PostgreSQL: CREATE INDEX … USING gin (tsv)".to_owned());
    let gin_secs = pg_exec(&mut conn, "CREATE INDEX docs_tsv ON docs USING gin (tsv)").await?;
    sp.finish_and_clear();
    println!("  GIN index in {gin_secs:.1} s");
    let sp = spinner("PostgreSQL: btree indexes, ANALYZE".to_owned());
    let btree_secs = pg_exec(&mut conn, "CREATE INDEX docs_content_type ON docs (content_type)").await?
        + pg_exec(&mut conn, "CREATE INDEX docs_created ON docs (created)").await?;
    let analyze_secs = pg_exec(&mut conn, "ANALYZE docs").await?;
    sp.finish_and_clear();
    let (total, gin): (i64, i64) =
        sqlx::query_as("SELECT pg_total_relation_size('docs'), pg_relation_size('docs_tsv')")
            .fetch_one(&mut conn)
            .await?;
    conn.close().await?;
    Ok(PgBuild {
        version,
        settings: settings.join(", "),
        load_secs,
        gin_secs,
        btree_secs,
        analyze_secs,
        total_bytes: total as u64,
        gin_bytes: gin as u64,
    })
}

/// `GET /search?q=&limit=&content_type=&facets=content_type`: the work an ArtStore answer
/// does (total, top hits with a highlight, facets), in SQL.
async fn pg_search(State(pool): State<PgPool>, Query(p): Query<HashMap<String, String>>) -> axum::response::Response {
    match pg_answer(&pool, &p).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

type PgHit = (Uuid, String, String, chrono::DateTime<chrono::Utc>, f32, String);

async fn pg_answer(pool: &PgPool, p: &HashMap<String, String>) -> anyhow::Result<Value> {
    let q = p.get("q").map_or("", String::as_str).trim();
    let limit: i64 = p.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10).clamp(1, 1000);
    let ct = p.get("content_type").filter(|s| !s.is_empty());
    let facets = p.get("facets").is_some_and(|f| f.split(',').any(|x| x.trim() == "content_type"));
    // websearch_to_tsquery has no prefix syntax: `word*` becomes to_tsquery('word:*').
    let (func, text) = match q.strip_suffix('*') {
        Some(w) if !w.is_empty() && w.chars().all(char::is_alphanumeric) => ("to_tsquery", format!("{w}:*")),
        _ => ("websearch_to_tsquery", q.to_owned()),
    };
    let filter = if ct.is_some() { " AND content_type = $2" } else { "" };
    let from = format!("FROM docs, {func}('english', $1) q WHERE tsv @@ q{filter}");
    let mut conn = pool.acquire().await?;

    let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT count(*) {from}"))).bind(&text);
    if let Some(ct) = ct {
        count = count.bind(ct);
    }
    let total = count.fetch_one(&mut *conn).await?;

    // ts_headline on the top rows only (PostgreSQL would postpone it past the LIMIT anyway).
    let sql = format!(
        "SELECT id, name, content_type, created, r, ts_headline('english', body, q) FROM \
         (SELECT id, name, content_type, created, body, q, ts_rank(tsv, q) AS r {from} \
         ORDER BY r DESC LIMIT {limit}) t ORDER BY r DESC"
    );
    let mut hits = sqlx::query_as::<_, PgHit>(AssertSqlSafe(sql)).bind(&text);
    if let Some(ct) = ct {
        hits = hits.bind(ct);
    }
    let hits = hits.fetch_all(&mut *conn).await?;

    let mut facet_json = serde_json::Map::new();
    if facets {
        let sql = format!("SELECT content_type, count(*) {from} GROUP BY content_type ORDER BY 2 DESC");
        let mut fq = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql)).bind(&text);
        if let Some(ct) = ct {
            fq = fq.bind(ct);
        }
        let rows = fq.fetch_all(&mut *conn).await?;
        facet_json.insert(
            "content_type".to_owned(),
            rows.into_iter().map(|(v, c)| json!({"value": v, "count": c})).collect::<Vec<_>>().into(),
        );
    }
    Ok(json!({
        "total": total,
        "hits": hits.into_iter().map(|(id, name, ct, created, r, hl)| json!({
            "id": id, "name": name, "content_type": ct, "created_at": created, "score": r,
            "highlights": {"content": [hl]},
        })).collect::<Vec<_>>(),
        "facets": facet_json,
    }))
}

struct PgEndpoint {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_pg_endpoint(pool: PgPool) -> anyhow::Result<PgEndpoint> {
    let app = axum::Router::new().route("/search", axum::routing::get(pg_search)).with_state(pool);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    Ok(PgEndpoint { base, stop, handle })
}

// ---------------------------------------------------------------------------------------
// Load and relevance over HTTP
// ---------------------------------------------------------------------------------------

/// One engine as the clients see it.
struct Engine {
    name: &'static str,
    search: String,
    token: Option<String>,
    /// The hit field that holds the document id.
    id_key: &'static str,
}

impl Engine {
    fn url(&self, q: &str, content_type: Option<&str>) -> anyhow::Result<reqwest::Url> {
        let mut p = vec![("q", q), ("limit", "10")];
        if let Some(ct) = content_type {
            p.push(("facets", "content_type"));
            p.push(("content_type", ct));
        }
        Ok(reqwest::Url::parse_with_params(&self.search, &p)?)
    }

    async fn get(&self, http: &reqwest::Client, url: reqwest::Url) -> anyhow::Result<bytes::Bytes> {
        let mut rb = http.get(url.clone());
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.with_context(|| format!("{}: {url}", self.name))?;
        let status = r.status();
        let body = r.bytes().await?;
        anyhow::ensure!(
            status.is_success(),
            "{} answered {status} to {url}: {}",
            self.name,
            String::from_utf8_lossy(&body[..body.len().min(400)])
        );
        Ok(body)
    }
}

struct LoadStats {
    clients: usize,
    queries: usize,
    secs: f64,
    /// Sorted.
    all: Vec<Duration>,
    /// Sorted, per [`KINDS`] entry.
    by_kind: Vec<Vec<Duration>>,
}

impl LoadStats {
    fn qps(&self) -> f64 {
        self.queries as f64 / self.secs.max(1e-9)
    }

    fn p(&self, p: f64) -> f64 {
        ms(percentile(&self.all, p))
    }

    fn line(&self) -> String {
        let kinds: Vec<String> = KINDS
            .iter()
            .zip(&self.by_kind)
            .map(|((_, label, _), v)| format!("{label} {:.1}/{:.1}", ms(percentile(v, 0.5)), ms(percentile(v, 0.99))))
            .collect();
        format!(
            "{:.0} QPS ({} queries in {:.1} s); p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; p50/p99 ms by kind: {}",
            self.qps(),
            thousands(self.queries as u64),
            self.secs,
            self.p(0.5),
            self.p(0.99),
            self.p(0.999),
            kinds.join(", ")
        )
    }
}

/// `clients` clients, each sending the next query of the set as soon as the last answer is
/// read, for `secs` seconds.
async fn load(
    http: &reqwest::Client,
    engine: &Arc<Engine>,
    urls: &Arc<Vec<(Kind, reqwest::Url)>>,
    clients: usize,
    secs: u64,
    label: &str,
) -> anyhow::Result<LoadStats> {
    let sp = spinner(format!("{label}: {} clients for {secs} s", clients));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, engine, urls, next) = (http.clone(), engine.clone(), urls.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<(Kind, Duration)> = Vec::new();
            while Instant::now() < deadline {
                let (kind, url) = &urls[next.fetch_add(1, Ordering::Relaxed) % urls.len()];
                let t = Instant::now();
                engine.get(&http, url.clone()).await?;
                lat.push((*kind, t.elapsed()));
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    sp.finish_and_clear();
    let mut by_kind: Vec<Vec<Duration>> =
        KINDS.iter().map(|(k, _, _)| all.iter().filter(|(kind, _)| kind == k).map(|(_, d)| *d).collect()).collect();
    for v in &mut by_kind {
        v.sort_unstable();
    }
    let mut all: Vec<Duration> = all.into_iter().map(|(_, d)| d).collect();
    all.sort_unstable();
    Ok(LoadStats { clients, queries: all.len(), secs, all, by_kind })
}

/// The rank (1–10) of each known item's target in the engine's top 10.
async fn ranks(http: &reqwest::Client, engine: &Engine, items: &[KnownItem]) -> anyhow::Result<Vec<Option<usize>>> {
    let pb = bar(items.len() as u64, &format!("{}: known-item queries", engine.name));
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let body = engine.get(http, engine.url(&it.q, None)?).await?;
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("{}: answer is not JSON", engine.name))?;
        let hits = v["hits"].as_array().with_context(|| format!("{}: no hits in {v}", engine.name))?;
        let target = it.target.to_string();
        out.push(hits.iter().take(10).position(|h| h[engine.id_key].as_str() == Some(target.as_str())).map(|p| p + 1));
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(out)
}

#[derive(Debug, Clone, Copy, Default)]
struct Relevance {
    n: usize,
    found: usize,
    rr: f64,
}

impl Relevance {
    fn of<'a>(items: impl Iterator<Item = &'a Option<usize>>) -> Relevance {
        let mut r = Relevance::default();
        for rank in items {
            r.n += 1;
            if let Some(k) = rank {
                r.found += 1;
                r.rr += 1.0 / *k as f64;
            }
        }
        r
    }

    fn success(&self) -> f64 {
        self.found as f64 / self.n.max(1) as f64
    }

    fn mrr(&self) -> f64 {
        self.rr / self.n.max(1) as f64
    }
}

/// Relevance over all known items and per set: (label, PostgreSQL, ArtStore).
type RelevanceTable = Vec<(String, Relevance, Relevance)>;

fn relevance_table(items: &[KnownItem], pg: &[Option<usize>], art: &[Option<usize>]) -> RelevanceTable {
    let subset = |f: &dyn Fn(ItemSet) -> bool, r: &[Option<usize>]| {
        Relevance::of(items.iter().zip(r).filter(|(it, _)| f(it.set)).map(|(_, x)| x))
    };
    let sets: [(&str, &dyn Fn(ItemSet) -> bool); 4] = [
        ("all", &|_| true),
        ("generated", &|s| s == ItemSet::Generated),
        ("generated, a Russian word", &|s| s == ItemSet::Russian),
        ("real text", &|s| s == ItemSet::Real),
    ];
    sets.iter()
        .map(|(label, f)| {
            let p = subset(*f, pg);
            (format!("{label} ({})", p.n), p, subset(*f, art))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    docs: usize,
    art_build: Option<IndexBuild>,
    four_k: Option<IndexBuild>,
    pg_build: Option<PgBuild>,
    /// (engine index 0 = PostgreSQL, 1 = ArtStore, stats).
    loads: Vec<(usize, LoadStats)>,
    cached: Option<LoadStats>,
    relevance: Option<RelevanceTable>,
}

pub async fn run(mut a: QueryBenchArgs) -> anyhow::Result<()> {
    if a.quick {
        a.docs = a.docs.min(20_000);
        a.seconds = a.seconds.min(3);
    }
    anyhow::ensure!(a.docs >= 100, "--docs must be at least 100");
    anyhow::ensure!(a.text_bytes >= 20, "--text-bytes must be at least 20");
    anyhow::ensure!(a.seconds >= 1, "--seconds must be at least 1");
    let dir = a
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("artstore-bench-query-{}", std::process::id())));
    if let Ok(mut entries) = std::fs::read_dir(&dir) {
        anyhow::ensure!(
            entries.next().is_none(),
            "{}: not empty (give a new or empty folder: it is removed at the end)",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let dir = std::fs::canonicalize(&dir)?;
    let mut res = Results { docs: a.docs, ..Default::default() };
    let outcome = phases(&a, &dir, &mut res).await;
    let _ = std::fs::remove_dir_all(&dir);
    summary(&a, &res);
    outcome
}

/// Everything both engines are given.
struct Corpus {
    docs: Arc<Vec<Doc>>,
    items: Vec<KnownItem>,
    queries: Vec<LoadQuery>,
}

async fn phases(a: &QueryBenchArgs, dir: &Path, res: &mut Results) -> anyhow::Result<()> {
    println!(
        "artstore bench query: {} cores, {:.1} GiB memory, work folder on {}, load average {}{}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        mem_total_gib(),
        crate::bench::bench_fs_type(dir),
        loadavg(),
        if a.quick { " (--quick: a smoke test)" } else { "" }
    );

    // 1. The corpus.
    let t = Instant::now();
    let vocab = Arc::new(tokio::task::spawn_blocking(Vocab::build).await?);
    let (n, tb) = (a.docs, a.text_bytes);
    let v2 = vocab.clone();
    let (mut docs, df) = tokio::task::spawn_blocking(move || {
        let pb = bar(n as u64, "generating documents");
        gen_set(&v2, SALT_CORPUS, n, tb, false, &pb)
    })
    .await?;
    let avg = docs.iter().map(|d| d.body.len()).sum::<usize>() as f64 / docs.len() as f64;
    let (real, held, sents) = real_sample(REAL_DOCS);
    let real_avg = real.iter().map(|d| d.body.len()).sum::<usize>() as f64 / real.len() as f64;
    let (mut items, other_form) = known_items(&vocab, &df, n, n + real.len(), tb, KNOWN_ITEMS);
    items.extend(real_known_items(&vocab, &df, &real, &held, &sents, REAL_KNOWN_ITEMS));
    let queries = load_queries(&vocab, &docs, QUERY_SET);
    println!(
        "corpus: {} generated documents (seeded, the same every run) in {:.1} s: words drawn from a Zipf–Mandelbrot \
         distribution (weight 1/(rank+{ZIPF_Q})^{ZIPF_S}) over {} English stop words, {} common English words, {} Russian \
         words in 3–5 inflected forms each (a form picked at random) and {} pronounceable pseudo-words (2–4 random \
         syllables; {:.0} % of English and pseudo-word occurrences in the plural); sentences of 5–16 words; text \
         {:.0} bytes on average (asked {tb}, uniform 50–150 %); a name of 3–5 words + extension, one of {} content \
         types, 0–3 of {} tags, created 2015–2025",
        thousands(n as u64),
        t.elapsed().as_secs_f64(),
        vocab.count(WordKind::Stop),
        vocab.count(WordKind::English),
        vocab.count(WordKind::Russian),
        vocab.count(WordKind::Pseudo),
        100.0 * PLURAL_SHARE,
        avg,
        CONTENT_TYPES.len(),
        TAGS.len(),
    );
    println!(
        "real-text sample: {} documents of 3–6 sentences (in order) drawn from {} sentences of public-domain prose \
         (the Declaration of Independence, the Gettysburg Address, the openings of Pride and Prejudice, A Tale of Two \
         Cities, Moby-Dick, Alice's Adventures in Wonderland, and of Anna Karenina in Russian), {real_avg:.0} bytes on \
         average; indexed with the corpus in both engines",
        real.len(),
        sents.len()
    );
    let generated = items.iter().filter(|i| i.set == ItemSet::Generated).count();
    let russian = items.iter().filter(|i| i.set == ItemSet::Russian).count();
    println!(
        "known-item queries: {generated} for random generated documents (2–3 of the document's words, from its rarer half \
         without its rarest fifth and without words in > 5 % of the documents; {:.0} % of the words written in \
         another inflection of the same word, as a searcher would); {russian} more for documents with a Russian word, \
         which the query names in its dictionary form (the document has another form in {other_form} of them); \
         {} for the real-text sample (the same way, words from different sentences); sent over HTTP to both, top 10",
        100.0 * OTHER_FORM_SHARE,
        items.len() - generated - russian
    );
    let shares: Vec<String> = KINDS.iter().map(|(_, l, s)| format!("{l} {s} %")).collect();
    println!(
        "load: {} queries, {}; words drawn by their corpus frequency (stop words left out), phrases of two adjacent \
         words of a document, facet+filter = a word + facets=content_type + content_type=…, prefix = the first 4–5 \
         letters of a word + *",
        thousands(queries.len() as u64),
        shares.join(", ")
    );
    docs.extend(real);
    let corpus = Corpus { docs: Arc::new(docs), items, queries };

    // 2. ArtStore's index.
    println!(
        "ArtStore: building the index through the query role's writer (Writer::apply, commit every {}) …",
        thousands(COMMIT_EVERY as u64)
    );
    let root = dir.join("index");
    let (live, d2) = (layout::live(&root), corpus.docs.clone());
    let b = tokio::task::spawn_blocking(move || {
        let pb = bar(d2.len() as u64, "ArtStore indexing");
        build_index(&live, &d2, Some(COMPLETE_PAYLOAD), &pb)
    })
    .await??;
    println!(
        "  {} documents: indexed (apply + commits) in {:.1} s = {} docs/s; merges finished {:.1} s later; \
         making the inputs took another {:.1} s (not counted); index folder {}",
        thousands(b.docs as u64),
        b.index_secs,
        thousands(b.rate() as u64),
        b.merge_secs,
        b.prep_secs,
        size(b.bytes)
    );
    println!("  {}", b.detect_line());
    res.art_build = Some(b);

    // 3. ArtStore's indexing rate for 4 KiB texts.
    let n4 = if a.quick { 5_000 } else { 50_000 };
    println!("ArtStore: indexing {} documents of 4 KiB into an index of their own …", thousands(n4 as u64));
    let (v2, d4) = (vocab.clone(), dir.join("index-4k"));
    let b = tokio::task::spawn_blocking(move || {
        let pb = bar(n4 as u64, "generating 4 KiB documents");
        let (docs, _) = gen_set(&v2, SALT_4K, n4, 4096, true, &pb);
        let pb = bar(n4 as u64, "ArtStore indexing 4 KiB");
        let r = build_index(&d4, &docs, None, &pb);
        let _ = std::fs::remove_dir_all(&d4);
        r
    })
    .await??;
    println!(
        "  {} documents of 4 KiB: indexed (apply + commits) in {:.1} s = {} docs/s (goal >= {}); merges {:.1} s more",
        thousands(b.docs as u64),
        b.index_secs,
        thousands(b.rate() as u64),
        thousands(INDEX_RATE_GOAL as u64),
        b.merge_secs
    );
    println!("  {}", b.detect_line());
    res.four_k = Some(b);

    // 4. PostgreSQL, then both over HTTP.
    let admin_opts: PgConnectOptions = a.postgres.parse().with_context(|| a.postgres.clone())?;
    let mut admin =
        PgConnection::connect_with(&admin_opts).await.with_context(|| format!("PostgreSQL at {}", a.postgres))?;
    let db = format!("artstore_bench_fts_{}", std::process::id());
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).execute(&mut admin).await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {db}"))).execute(&mut admin).await?;
    let opts = admin_opts.clone().database(&db);
    let r = with_postgres(a, dir, &root, &corpus, &opts, res).await;
    let dropped =
        sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).execute(&mut admin).await;
    let _ = admin.close().await;
    r?;
    dropped.with_context(|| format!("dropping the database {db}"))?;
    Ok(())
}

fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1024.0 * 1024.0))
}

async fn with_postgres(
    a: &QueryBenchArgs,
    dir: &Path,
    root: &Path,
    c: &Corpus,
    opts: &PgConnectOptions,
    res: &mut Results,
) -> anyhow::Result<()> {
    println!(
        "PostgreSQL: loading the same documents (COPY), then the GIN index (maintenance_work_mem 1GB for the build) …"
    );
    let b = build_pg(opts, &c.docs).await?;
    println!(
        "  {}: built in {:.1} s (COPY {:.1} + GIN {:.1} + btree {:.1} + ANALYZE {:.1}) = {:.0} docs/s; \
         pg_total_relation_size {} (GIN index {}); server settings: {}",
        b.version,
        b.build_secs(),
        b.load_secs,
        b.gin_secs,
        b.btree_secs,
        b.analyze_secs,
        c.docs.len() as f64 / b.build_secs(),
        size(b.total_bytes),
        size(b.gin_bytes),
        b.settings
    );
    println!(
        "  PostgreSQL uses the `english` configuration (the original plan): Russian words are lower-cased but not stemmed there"
    );
    res.pg_build = Some(b);

    let pool = PgPoolOptions::new().max_connections(8).connect_with(opts.clone()).await?;
    let pg = start_pg_endpoint(pool.clone()).await?;
    let art = start_artstore(&dir.join("keys"), root, 0).await?;
    let engines = [
        Arc::new(Engine { name: "PostgreSQL", search: format!("{}/search", pg.base), token: None, id_key: "id" }),
        Arc::new(Engine {
            name: "ArtStore",
            search: format!("{}/api/v1/search", art.base),
            token: Some(art.token.clone()),
            id_key: "file_id",
        }),
    ];
    let r = measure(a, c, &engines, res).await;
    let stopped = art.stop().await;
    let r = match r {
        Ok(()) => {
            stopped?;
            // The result cache on: the same load once more at 8 clients.
            println!(
                "ArtStore with its result cache on (default {} entries), 8 clients:",
                thousands(QueryConfig::default().result_cache_entries)
            );
            let art = start_artstore(&dir.join("keys"), root, QueryConfig::default().result_cache_entries).await?;
            let e = Arc::new(Engine {
                name: "ArtStore (cache)",
                search: format!("{}/api/v1/search", art.base),
                token: Some(art.token.clone()),
                id_key: "file_id",
            });
            let urls = urls_for(&e, &c.queries)?;
            let http = http_client()?;
            let r = load(&http, &e, &urls, 8, a.seconds, "ArtStore, result cache on").await;
            let stopped = art.stop().await;
            let s = r?;
            stopped?;
            println!("  {}", s.line());
            res.cached = Some(s);
            Ok(())
        }
        Err(e) => Err(e),
    };
    let _ = pg.stop.send(());
    let _ = pg.handle.await;
    pool.close().await;
    r
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(600))
        .build()?)
}

fn urls_for(e: &Engine, queries: &[LoadQuery]) -> anyhow::Result<Arc<Vec<(Kind, reqwest::Url)>>> {
    Ok(Arc::new(queries.iter().map(|q| Ok((q.kind, e.url(&q.q, q.content_type)?))).collect::<anyhow::Result<_>>()?))
}

async fn measure(a: &QueryBenchArgs, c: &Corpus, engines: &[Arc<Engine>; 2], res: &mut Results) -> anyhow::Result<()> {
    let http = http_client()?;
    let urls = [urls_for(&engines[0], &c.queries)?, urls_for(&engines[1], &c.queries)?];
    println!(
        "both engines over HTTP on loopback (ArtStore: the query role's router, result cache off; PostgreSQL: an axum endpoint in this process, a pool of 8 connections); every client in this process too"
    );
    for (e, u) in engines.iter().zip(&urls) {
        let s = load(&http, e, u, 8, a.seconds, &format!("{}: warm-up", e.name)).await?;
        println!("  warm-up {}: {:.0} QPS at 8 clients for {:.0} s (not counted)", e.name, s.qps(), s.secs);
    }

    println!("relevance: {} known-item queries, one at a time, top 10", c.items.len());
    let pg = ranks(&http, &engines[0], &c.items).await?;
    let art = ranks(&http, &engines[1], &c.items).await?;
    let table = relevance_table(&c.items, &pg, &art);
    for (label, p, s) in &table {
        println!(
            "  {label:<50} success@10 PostgreSQL {:.3}  ArtStore {:.3}   MRR PostgreSQL {:.3}  ArtStore {:.3}",
            p.success(),
            s.success(),
            p.mrr(),
            s.mrr()
        );
    }
    res.relevance = Some(table);

    for clients in [1, 8] {
        println!(
            "load: {clients} client{} for {} s each (load average before: {})",
            if clients > 1 { "s" } else { "" },
            a.seconds,
            loadavg()
        );
        for (i, (e, u)) in engines.iter().zip(&urls).enumerate() {
            let s = load(&http, e, u, clients, a.seconds, e.name).await?;
            println!("  {:<10} {}", e.name, s.line());
            res.loads.push((i, s));
        }
    }
    Ok(())
}

fn summary(a: &QueryBenchArgs, r: &Results) {
    let row = |what: &str, pg: String, art: String, ratio: String| {
        println!("{what:<52} {pg:>24} {art:>24} {ratio:>16}");
    };
    let stats = |engine: usize, clients: usize| {
        r.loads.iter().find(|(e, s)| *e == engine && s.clients == clients).map(|(_, s)| s)
    };
    println!();
    println!(
        "summary ({}, {} generated documents + {} real-text; PostgreSQL measured in this run on the same documents; \
         load average now {})",
        if a.quick { "--quick" } else { "full run" },
        thousands(r.docs as u64),
        REAL_DOCS,
        loadavg()
    );
    row("measure", "PostgreSQL".into(), "ArtStore".into(), "ArtStore vs PG".into());
    println!("{}", "-".repeat(119));
    if let (Some(p), Some(s)) = (&r.pg_build, &r.art_build) {
        let n = s.docs as f64;
        row(
            "index build (load + index, to merged/analyzed)",
            format!("{:.1} s", p.build_secs()),
            format!("{:.1} s", s.build_secs()),
            faster(p.build_secs() / s.build_secs()),
        );
        row(
            "  documents/s",
            thousands((n / p.build_secs()) as u64),
            thousands((n / s.build_secs()) as u64),
            String::new(),
        );
        row(
            "index size on disk",
            size(p.total_bytes),
            size(s.bytes),
            format!("{:.2}x the size", s.bytes as f64 / p.total_bytes as f64),
        );
    }
    for clients in [1, 8] {
        if let (Some(p), Some(s)) = (stats(0, clients), stats(1, clients)) {
            row(
                &format!("queries/s, {clients} client{}", if clients > 1 { "s" } else { "" }),
                thousands(p.qps() as u64),
                thousands(s.qps() as u64),
                format!("{:.1}x", s.qps() / p.qps()),
            );
            row(
                &format!("  latency p50 / p99 / p99.9 ms, {clients} client{}", if clients > 1 { "s" } else { "" }),
                format!("{:.2} / {:.2} / {:.2}", p.p(0.5), p.p(0.99), p.p(0.999)),
                format!("{:.2} / {:.2} / {:.2}", s.p(0.5), s.p(0.99), s.p(0.999)),
                {
                    let r = p.p(0.99) / s.p(0.99).max(1e-9);
                    if r >= 1.0 {
                        format!("p99 {r:.1}x lower")
                    } else {
                        format!("p99 {:.1}x higher", 1.0 / r.max(1e-9))
                    }
                },
            );
        }
    }
    if let Some(s) = &r.cached {
        row(
            "  ArtStore, result cache on, 8 clients: QPS, p99 ms",
            "-".into(),
            format!("{}, {:.2}", thousands(s.qps() as u64), s.p(0.99)),
            String::new(),
        );
    }
    if let Some(t) = &r.relevance {
        for (label, p, s) in t {
            row(
                &format!("success@10 / MRR, {label}"),
                format!("{:.3} / {:.3}", p.success(), p.mrr()),
                format!("{:.3} / {:.3}", s.success(), s.mrr()),
                format!("{:+.3} / {:+.3}", s.success() - p.success(), s.mrr() - p.mrr()),
            );
        }
    }
    if let Some(b) = &r.four_k {
        row(
            &format!("indexing 4 KiB texts ({} docs), docs/s", thousands(b.docs as u64)),
            "-".into(),
            thousands(b.rate() as u64),
            String::new(),
        );
    }
    println!();
    let scale = if r.docs >= 1_000_000 {
        String::new()
    } else {
        format!(
            " (measured at {} documents; the goal is stated at 1,000,000: indicative only)",
            thousands(r.docs as u64)
        )
    };
    println!("goals{scale}:");
    for clients in [1, 8] {
        match stats(1, clients) {
            Some(s) => println!(
                "  {}  p99 < {P99_GOAL_MS:.0} ms over HTTP, {clients} client{}: ArtStore p99 {:.2} ms",
                pass(s.p(0.99) < P99_GOAL_MS),
                if clients > 1 { "s" } else { "" },
                s.p(0.99)
            ),
            None => println!("  ----  p99 < {P99_GOAL_MS:.0} ms, {clients} clients: not measured"),
        }
    }
    match (stats(0, 8), stats(1, 8)) {
        (Some(p), Some(s)) => println!(
            "  {}  queries/s >= {QPS_GOAL_RATIO:.0}x PostgreSQL's at 8 clients: {:.1}x ({:.0} vs {:.0})",
            pass(s.qps() >= QPS_GOAL_RATIO * p.qps()),
            s.qps() / p.qps(),
            s.qps(),
            p.qps()
        ),
        _ => println!("  ----  queries/s >= {QPS_GOAL_RATIO:.0}x PostgreSQL's: not measured"),
    }
    match r.relevance.as_ref().and_then(|t| t.split_first()) {
        Some(((label, p, s), sets)) => {
            let below: Vec<String> = sets
                .iter()
                .flat_map(|(l, p, s)| {
                    let mut v = Vec::new();
                    if s.success() < p.success() {
                        v.push(format!("{l} success@10 {:.3} vs {:.3}", s.success(), p.success()));
                    }
                    if s.mrr() < p.mrr() {
                        v.push(format!("{l} MRR {:.3} vs {:.3}", s.mrr(), p.mrr()));
                    }
                    v
                })
                .collect();
            println!(
                "  {}  relevance >= PostgreSQL's ({label}): success@10 {:.3} vs {:.3}, MRR {:.3} vs {:.3}{}",
                pass(s.success() >= p.success() && s.mrr() >= p.mrr()),
                s.success(),
                p.success(),
                s.mrr(),
                p.mrr(),
                if below.is_empty() { String::new() } else { format!("; below PostgreSQL on: {}", below.join(", ")) }
            )
        }
        None => println!("  ----  relevance >= PostgreSQL's: not measured"),
    }
    match &r.four_k {
        Some(b) => println!(
            "  {}  indexing >= {} docs/s for 4 KiB texts: {} docs/s",
            pass(b.rate() >= INDEX_RATE_GOAL),
            thousands(INDEX_RATE_GOAL as u64),
            thousands(b.rate() as u64)
        ),
        None => {
            println!("  ----  indexing >= {} docs/s for 4 KiB texts: not measured", thousands(INDEX_RATE_GOAL as u64))
        }
    }
}
