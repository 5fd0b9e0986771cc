//! The Django data set of the benches: a fixture in Django's dumpdata format shaped like the
//! Chinook sample database — 11 models, Chinook's row counts (15,607 objects) — for the app in
//! `app/` (whose `sqlmigrate` output is `schema.*.sql`). Deterministic: a small LCG, no crate.
//!
//! It is shaped as a real app's dump would be: mixed-case `db_column` renames (the invoice's
//! `InvoiceDate`, `Total`, `CustomerId`…, and the invoice line's `unit_price` → `UnitPrice`
//! found without `Fixtures::field_column`), aware datetimes (`2009-01-01T00:00:00Z`), decimals as
//! strings, dates, booleans, NULLs, postal codes that are strings of digits (some with a leading
//! zero), non-ASCII text. Objects are not in foreign-key order everywhere: the employees come
//! boss last (a self-referencing key), invoice lines before invoices, playlist tracks before
//! playlists.

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value as Json, json};

/// Each model of the app `chinook`, with its number of objects.
pub const MODELS: [(&str, usize); 11] = [
    ("genre", 25),
    ("mediatype", 5),
    ("artist", 275),
    ("album", 347),
    ("track", 3503),
    ("employee", 8),
    ("customer", 59),
    ("invoice", 412),
    ("invoiceline", 2240),
    ("playlist", 18),
    ("playlisttrack", 8715),
];

/// Objects in the fixture (and rows once loaded).
pub const OBJECTS: usize = 15_607;

/// `manage.py sqlmigrate chinook 0001` on each engine, without `BEGIN;`/`COMMIT;`.
pub const SCHEMA_POSTGRES: &str = include_str!("schema.postgres.sql");
pub const SCHEMA_SQLITE: &str = include_str!("schema.sqlite.sql");
pub const SCHEMA_MYSQL: &str = include_str!("schema.mysql.sql");

/// The table Django gives `model`.
pub fn table(model: &str) -> String {
    format!("chinook_{model}")
}

/// The fixture's file: every field finds its column unaided (`unit_price` → `"UnitPrice"` too).
pub fn fixtures(file: &Path) -> testdb::Fixtures {
    testdb::Fixtures::files([file])
}

/// Writes the fixture to `file`.
pub fn write_fixture(file: &Path) {
    std::fs::write(file, fixture()).unwrap();
}

/// A 64-bit LCG (Knuth's MMIX constants); its high bits.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One model's objects, as `dumpdata` writes them (fields in the model's order).
#[derive(Default)]
struct Objects(Vec<String>);

impl Objects {
    fn push(&mut self, model: &str, pk: usize, fields: &[(&str, Json)]) {
        let mut text = format!("{{\"model\": \"chinook.{model}\", \"pk\": {pk}, \"fields\": {{");
        for (at, (name, value)) in fields.iter().enumerate() {
            if at > 0 {
                text.push_str(", ");
            }
            let _ = write!(text, "\"{name}\": {value}");
        }
        text.push_str("}}");
        self.0.push(text);
    }
}

/// `Some(text)` as a JSON string, `None` as `null`.
fn opt(text: Option<&str>) -> Json {
    text.map_or(Json::Null, Json::from)
}

/// Cents as Django dumps a `DecimalField(decimal_places=2)`: `"0.99"`.
fn decimal(cents: u64) -> Json {
    Json::from(format!("{}.{:02}", cents / 100, cents % 100))
}

/// Days since 1970-01-01 as a civil date (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap();
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap();
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const GENRES: [&str; 25] = [
    "Rock",
    "Jazz",
    "Metal",
    "Alternative & Punk",
    "Rock And Roll",
    "Blues",
    "Latin",
    "Reggae",
    "Pop",
    "Soundtrack",
    "Bossa Nova",
    "Easy Listening",
    "Heavy Metal",
    "R&B/Soul",
    "Electronica/Dance",
    "World",
    "Hip Hop/Rap",
    "Science Fiction",
    "TV Shows",
    "Sci Fi & Fantasy",
    "Drama",
    "Comedy",
    "Alternative",
    "Classical",
    "Opera",
];

const MEDIA_TYPES: [&str; 5] = [
    "MPEG audio file",
    "Protected AAC audio file",
    "Protected MPEG-4 video file",
    "Purchased AAC audio file",
    "AAC audio file",
];

const ARTISTS: [&str; 24] = [
    "AC/DC",
    "Accept",
    "Aerosmith",
    "Alanis Morissette",
    "Antônio Carlos Jobim",
    "Björk",
    "Mötley Crüe",
    "Motörhead",
    "Sigur Rós",
    "Caetano Veloso",
    "Chico Buarque",
    "Os Mutantes",
    "Queensrÿche",
    "Blue Öyster Cult",
    "Hüsker Dü",
    "Beyoncé",
    "Ελευθερία Αρβανιτάκη",
    "坂本龍一",
    "Antonín Dvořák",
    "Frédéric Chopin",
    "Sinéad O'Connor",
    "\"Weird Al\" Yankovic",
    "Jean-Michel Jarre",
    "Mary J. Blige",
];

const WORDS: [&str; 32] = [
    "Black",
    "Velvet",
    "Electric",
    "Silent",
    "Midnight",
    "Golden",
    "Broken",
    "Wild",
    "Blue",
    "Crimson",
    "Lost",
    "Northern",
    "Saudade",
    "Coração",
    "Noite",
    "Canção",
    "Sonho",
    "Straße",
    "Fire",
    "River",
    "Dream",
    "Garden",
    "Machine",
    "Echo",
    "Thunder",
    "Ocean",
    "Mirror",
    "Storm",
    "Heart",
    "Road",
    "Stone",
    "Light",
];

const COMPOSERS: [&str; 12] = [
    "Angus Young, Malcolm Young, Brian Johnson",
    "Antônio Carlos Jobim/Vinícius de Moraes",
    "Björk Guðmundsdóttir",
    "Steven Tyler, Joe Perry",
    "Chico Buarque",
    "Lemmy Kilmister",
    "J.S. Bach",
    "Ludwig van Beethoven",
    "Caetano Veloso e Gilberto Gil",
    "Jón Þór Birgisson",
    "Nikki Sixx/Mick Mars",
    "Ryuichi Sakamoto",
];

/// Places: city, state, country, postal code (digit strings kept as text, some with a leading
/// zero), street.
type Place = (
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
    &'static str,
);

const PLACES: [Place; 16] = [
    (
        "São José dos Campos",
        Some("SP"),
        "Brazil",
        Some("12227-000"),
        "Av. Brigadeiro Faria Lima",
    ),
    (
        "Stuttgart",
        None,
        "Germany",
        Some("70174"),
        "Theodor-Heuss-Straße",
    ),
    (
        "Montréal",
        Some("QC"),
        "Canada",
        Some("H2G 1A7"),
        "Rue Saint-Denis",
    ),
    ("Oslo", None, "Norway", Some("0171"), "Ullevålsveien"),
    ("Prague", None, "Czech Republic", Some("14700"), "Klanova"),
    ("Boston", Some("MA"), "USA", Some("02113"), "Hanover Street"),
    ("Dublin", Some("Dublin"), "Ireland", None, "Grafton Street"),
    ("Paris", None, "France", Some("75002"), "Rue Saint-Honoré"),
    ("Kraków", None, "Poland", Some("00358"), "Ordynacka"),
    ("Helsinki", None, "Finland", Some("00530"), "Porthaninkatu"),
    ("Lisbon", None, "Portugal", None, "Rua da Assunção"),
    ("Stockholm", None, "Sweden", Some("11230"), "Celsiusgatan"),
    ("Bangalore", None, "India", Some("560001"), "MG Road"),
    (
        "London",
        None,
        "United Kingdom",
        Some("SW1V 3EN"),
        "Rochester Row",
    ),
    (
        "København",
        None,
        "Denmark",
        Some("1720"),
        "Sønder Boulevard",
    ),
    ("Madrid", None, "Spain", Some("28015"), "Calle Lira"),
];

const FIRST_NAMES: [&str; 20] = [
    "Luís",
    "Leonie",
    "François",
    "Bjørn",
    "František",
    "Helena",
    "Astrid",
    "Daan",
    "Kara",
    "Eduardo",
    "João",
    "Camille",
    "Stanisław",
    "Joakim",
    "Ladislav",
    "Madalena",
    "Niklas",
    "Manoj",
    "Emma",
    "Hugh",
];

const LAST_NAMES: [&str; 15] = [
    "Gonçalves",
    "Köhler",
    "Tremblay",
    "Hansen",
    "Wichterlová",
    "Holý",
    "Gruber",
    "Peeters",
    "Nielsen",
    "Martins",
    "Fernandes",
    "Dubois",
    "Wójcik",
    "Lindqvist",
    "O'Reilly",
];

const PLAYLISTS: [&str; 18] = [
    "Music",
    "Movies",
    "TV Shows",
    "Audiobooks",
    "90’s Music",
    "Audiobooks",
    "Movies",
    "Music",
    "Music Videos",
    "TV Shows",
    "Brazilian Music",
    "Classical",
    "Classical 101 - Deep Cuts",
    "Classical 101 - Next Steps",
    "Classical 101 - The Basics",
    "Grunge",
    "Heavy Metal Classic",
    "On-The-Go 1",
];

/// Chinook's employees: last, first, title, reports to, born, hired, address, city, postal code,
/// phone, fax.
type Employee = (
    &'static str,
    &'static str,
    &'static str,
    Option<usize>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
);

const EMPLOYEES: [Employee; 8] = [
    (
        "Adams",
        "Andrew",
        "General Manager",
        None,
        "1962-02-18",
        "2002-08-14",
        "11120 Jasper Ave NW",
        "Edmonton",
        "T5K 2N1",
        "+1 (780) 428-9482",
        Some("+1 (780) 428-3457"),
    ),
    (
        "Edwards",
        "Nancy",
        "Sales Manager",
        Some(1),
        "1958-12-08",
        "2002-05-01",
        "825 8 Ave SW",
        "Calgary",
        "T2P 2T3",
        "+1 (403) 262-3443",
        Some("+1 (403) 262-3322"),
    ),
    (
        "Peacock",
        "Jane",
        "Sales Support Agent",
        Some(2),
        "1973-08-29",
        "2002-04-01",
        "1111 6 Ave SW",
        "Calgary",
        "T2P 5M5",
        "+1 (403) 262-3443",
        Some("+1 (403) 262-6712"),
    ),
    (
        "Park",
        "Margaret",
        "Sales Support Agent",
        Some(2),
        "1947-09-19",
        "2003-05-03",
        "683 10 Street SW",
        "Calgary",
        "T2P 5G3",
        "+1 (403) 263-4423",
        Some("+1 (403) 263-4289"),
    ),
    (
        "Johnson",
        "Steve",
        "Sales Support Agent",
        Some(2),
        "1965-03-03",
        "2003-10-17",
        "7727B 41 Ave",
        "Calgary",
        "T3B 1Y7",
        "1 (780) 836-9987",
        Some("1 (780) 836-9543"),
    ),
    (
        "Mitchell",
        "Michael",
        "IT Manager",
        Some(1),
        "1973-07-01",
        "2003-10-17",
        "5827 Bowness Road NW",
        "Calgary",
        "T3B 0C5",
        "+1 (403) 246-9887",
        Some("+1 (403) 246-9899"),
    ),
    (
        "King",
        "Robert",
        "IT Staff",
        Some(6),
        "1970-05-29",
        "2004-01-02",
        "590 Columbia Boulevard West",
        "Lethbridge",
        "T1K 5N8",
        "+1 (403) 456-9986",
        None,
    ),
    (
        "Callahan",
        "Laura",
        "IT Staff",
        Some(6),
        "1968-01-09",
        "2004-03-04",
        "923 7 ST NW",
        "Lethbridge",
        "T1H 1Y8",
        "+1 (403) 467-3351",
        Some("+1 (403) 467-8772"),
    ),
];

/// The fixture's text: `[{"model": "chinook.genre", "pk": 1, "fields": {…}}, …]`.
pub fn fixture() -> String {
    let mut lcg = Lcg(0x00C1_100C);
    let count = |model: &str| MODELS.iter().find(|(m, _)| *m == model).unwrap().1;

    let mut genres = Objects::default();
    for (at, name) in GENRES.iter().enumerate() {
        genres.push("genre", at + 1, &[("name", json!(name))]);
    }
    let mut media_types = Objects::default();
    for (at, name) in MEDIA_TYPES.iter().enumerate() {
        media_types.push("mediatype", at + 1, &[("name", json!(name))]);
    }

    let mut artists = Objects::default();
    for pk in 1..=count("artist") {
        let name = if pk <= ARTISTS.len() {
            Some(ARTISTS[pk - 1].to_string())
        } else if pk % 137 == 0 {
            None
        } else {
            Some(format!("The {} {}s", lcg.pick(&WORDS), lcg.pick(&WORDS)))
        };
        artists.push("artist", pk, &[("name", opt(name.as_deref()))]);
    }

    let mut albums = Objects::default();
    for pk in 1..=count("album") {
        let title = match pk % 5 {
            0 => format!("{} Ao Vivo", lcg.pick(&WORDS)),
            1 => format!(
                "{} {}, Vol. {}",
                lcg.pick(&WORDS),
                lcg.pick(&WORDS),
                pk % 4 + 1
            ),
            _ => format!("{} of the {}", lcg.pick(&WORDS), lcg.pick(&WORDS)),
        };
        let artist = lcg.below(count("artist")) + 1;
        albums.push(
            "album",
            pk,
            &[("title", json!(title)), ("artist", json!(artist))],
        );
    }

    let tracks_count = count("track");
    let mut track_cents = Vec::with_capacity(tracks_count);
    let mut tracks = Objects::default();
    for pk in 1..=tracks_count {
        let album = (pk % 97 != 0).then(|| (pk - 1) * count("album") / tracks_count + 1);
        let media_type = match lcg.below(100) {
            0..80 => 1,
            80..90 => 2,
            90..95 => 3,
            95..98 => 4,
            _ => 5,
        };
        let video = media_type == 3;
        let genre = (pk % 113 != 0).then(|| lcg.below(GENRES.len()) + 1);
        let composer = (!lcg.chance(27)).then(|| lcg.pick(&COMPOSERS));
        let milliseconds = if video {
            1_200_000 + lcg.below(1_800_000)
        } else {
            60_000 + lcg.below(400_000)
        };
        let bytes = (pk % 53 != 0).then_some(milliseconds * 33 + lcg.below(1_000));
        let cents = if video { 199 } else { 99 };
        track_cents.push(cents);
        let name = match pk % 7 {
            0 => format!(
                "{} ({})",
                lcg.pick(&WORDS),
                lcg.pick(&["Live", "Remastered", "Ao Vivo"])
            ),
            _ => format!("{} {}", lcg.pick(&WORDS), lcg.pick(&WORDS)),
        };
        tracks.push(
            "track",
            pk,
            &[
                ("name", json!(name)),
                ("album", json!(album)),
                ("media_type", json!(media_type)),
                ("genre", json!(genre)),
                ("composer", opt(composer)),
                ("milliseconds", json!(milliseconds)),
                ("bytes", json!(bytes)),
                ("unit_price", decimal(cents)),
                ("explicit", json!(lcg.chance(8))),
            ],
        );
    }

    // Boss last: every employee but the last listed reports to one that comes after.
    let mut employees = Objects::default();
    for (at, employee) in EMPLOYEES.iter().enumerate().rev() {
        let (last, first, title, reports_to, born, hired, address, city, postal, phone, fax) =
            *employee;
        employees.push(
            "employee",
            at + 1,
            &[
                ("last_name", json!(last)),
                ("first_name", json!(first)),
                ("title", json!(title)),
                ("reports_to", json!(reports_to)),
                ("birth_date", json!(born)),
                ("hire_date", json!(hired)),
                ("address", json!(address)),
                ("city", json!(city)),
                ("state", json!("AB")),
                ("country", json!("Canada")),
                ("postal_code", json!(postal)),
                ("phone", json!(phone)),
                ("fax", opt(fax)),
                (
                    "email",
                    json!(format!("{}@chinookcorp.com", first.to_lowercase())),
                ),
            ],
        );
    }

    let customers_count = count("customer");
    let mut customer_places = Vec::with_capacity(customers_count);
    let mut customers = Objects::default();
    for pk in 1..=customers_count {
        let place = PLACES[lcg.below(PLACES.len())];
        let (city, state, country, postal, street) = place;
        let address = format!("{street} {}", lcg.below(3000) + 1);
        customer_places.push((address.clone(), place));
        let company = lcg.chance(20).then(|| {
            lcg.pick(&[
                "Embraer S.A.",
                "JetBrains s.r.o.",
                "Woodstock Discos",
                "Telus",
            ])
        });
        let fax = lcg.chance(25).then(|| {
            format!(
                "+47 22 {:02} {:02} {:02}",
                pk % 100,
                pk * 3 % 100,
                pk * 7 % 100
            )
        });
        // Support agents are employees 3 to 5; the last customer has none.
        let support_rep = (pk != customers_count).then_some(3 + pk % 3);
        customers.push(
            "customer",
            pk,
            &[
                ("first_name", json!(FIRST_NAMES[pk % FIRST_NAMES.len()])),
                ("last_name", json!(LAST_NAMES[pk * 7 % LAST_NAMES.len()])),
                ("company", opt(company)),
                ("address", json!(address)),
                ("city", json!(city)),
                ("state", opt(state)),
                ("country", json!(country)),
                ("postal_code", opt(postal)),
                (
                    "phone",
                    json!(format!("+55 (12) 3923-{:04}", pk * 37 % 10_000)),
                ),
                ("fax", opt(fax.as_deref())),
                ("email", json!(format!("customer{pk}@example.com"))),
                ("support_rep", json!(support_rep)),
                ("subscribed", json!(lcg.chance(40))),
            ],
        );
    }

    // Lines per invoice: Chinook's cycle of 1, 2, 2, 4, 6, 9, 14, one more on the last 12, so
    // that 412 invoices have 2,240 lines.
    const LINES: [usize; 7] = [1, 2, 2, 4, 6, 9, 14];
    let invoices_count = count("invoice");
    let mut invoices = Objects::default();
    let mut lines = Objects::default();
    let mut line_pk = 0;
    for pk in 1..=invoices_count {
        let lines_of = LINES[(pk - 1) % LINES.len()] + usize::from(pk > invoices_count - 12);
        let mut total = 0;
        for _ in 0..lines_of {
            line_pk += 1;
            let track = lcg.below(tracks_count) + 1;
            let quantity = if lcg.chance(5) { 2 } else { 1 };
            let cents = track_cents[track - 1];
            total += cents * quantity;
            lines.push(
                "invoiceline",
                line_pk,
                &[
                    ("invoice", json!(pk)),
                    ("track", json!(track)),
                    ("unit_price", decimal(cents)),
                    ("quantity", json!(quantity)),
                ],
            );
        }
        let customer = (pk - 1) * 23 % customers_count + 1;
        let (address, (city, state, country, postal, _)) = &customer_places[customer - 1];
        // 2009-01-01 (14,245 days after 1970-01-01) to the end of 2013; half at midnight.
        let days = 14_245 + i64::try_from((pk - 1) * 1_820 / invoices_count).unwrap();
        let (year, month, day) = civil(days);
        let (hour, minute) = if pk % 2 == 1 {
            (0, 0)
        } else {
            (lcg.below(24), lcg.below(60))
        };
        invoices.push(
            "invoice",
            pk,
            &[
                ("customer", json!(customer)),
                (
                    "invoicedate",
                    json!(format!(
                        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:00Z"
                    )),
                ),
                ("billingaddress", json!(address)),
                ("billingcity", json!(city)),
                ("billingstate", opt(*state)),
                ("billingcountry", json!(country)),
                ("billingpostalcode", opt(*postal)),
                ("total", decimal(total)),
            ],
        );
    }
    assert_eq!(line_pk, count("invoiceline"));

    let mut playlists = Objects::default();
    for (at, name) in PLAYLISTS.iter().enumerate() {
        playlists.push("playlist", at + 1, &[("name", json!(name))]);
    }
    // Distinct (playlist, track) pairs: 7 is invertible modulo 3,503, and each playlist has
    // fewer than 3,503 tracks.
    let mut playlist_tracks = Objects::default();
    for at in 0..count("playlisttrack") {
        let playlist = at % PLAYLISTS.len() + 1;
        let track = (at / PLAYLISTS.len() * 7 + playlist * 13) % tracks_count + 1;
        playlist_tracks.push(
            "playlisttrack",
            at + 1,
            &[("playlist", json!(playlist)), ("track", json!(track))],
        );
    }

    // Not in foreign-key order: lines before their invoices, playlist tracks before playlists.
    let order = [
        genres,
        media_types,
        artists,
        albums,
        tracks,
        employees,
        customers,
        lines,
        invoices,
        playlist_tracks,
        playlists,
    ];
    let objects: Vec<String> = order.into_iter().flat_map(|objects| objects.0).collect();
    assert_eq!(objects.len(), OBJECTS);
    format!("[{}]", objects.join(", "))
}
