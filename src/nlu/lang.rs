//! What changes with the caller's language below the agent's own text: the
//! words the slot extractors read (numbers, yes and no, months, currencies),
//! how amounts and dates are said, and the few sentences the lookups build
//! themselves. An agent may answer only in languages listed here; anything
//! else is refused when it loads, not discovered on a call.

use chrono::{Datelike, NaiveDate};

/// A language the system can hear numbers in and speak amounts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    Es,
}

/// Sentences and words the lookups put together themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phrase {
    /// Wrong account number or PIN (also a locked account).
    NoMatch,
    AccountGone,
    /// `{digits}` of the card.
    NoCard,
    /// `{kind}` of loan.
    NoLoanProduct,
    NoLoan,
    NoTransactions,
    /// `{id}`: the order number asked for.
    NoOrder,
    /// `{id}`: an order of another customer than the recognised caller.
    NotYourOrder,
    /// A return asked for an order still on its way.
    NotDelivered,
    /// A return asked for past the 30-day window.
    ReturnTooLate,
    /// An address change asked for an order already shipped.
    AlreadyShipped,
    /// `{amount}`, `{who}`, `{when}`.
    Paid,
    Received,
    /// "percent" after a rate.
    Percent,
    /// The replacement card's delivery time in working days.
    ReplacementDays,
    Unavailable,
    /// Account data asked for before verification.
    NeedVerify,
    /// Identity checks ran out on this call.
    CannotVerify,
    EarlierToday,
    Yesterday,
    /// `{day}`: a weekday or a date.
    OnDay,
    /// A confirmation answered with neither.
    YesOrNo,
    /// Before the reason a value was refused.
    Sorry,
    /// A lookup failed and its step says nothing of its own; `{reason}`.
    LookupFailed,
    /// A transfer could not be made; the bot keeps the caller.
    TransferFailed,
    /// A desk agent handed the caller back to the bot.
    BackWithBot,
    /// On hold, first in the queue.
    NextInLine,
    /// On hold; `{n}`: the caller's place in the queue.
    PlaceInQueue,
    /// The caller only greeted ("Hi, good afternoon."): greet back and
    /// invite the request.
    GreetBack,
    /// The node is closing and ends the call (the main language's is
    /// `server.closing_prompt`).
    Closing,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Es];

    /// `en` or `es`; `None` for a language without numbers and phrases here.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Self::En),
            "es" => Some(Self::Es),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
        }
    }

    pub fn phrase(self, p: Phrase) -> &'static str {
        use Phrase::*;
        match (self, p) {
            (Self::En, NoMatch) => "those details don't match our records",
            (Self::Es, NoMatch) => "esos datos no coinciden con nuestros registros",
            (Self::En, AccountGone) => "I can't find that account any more",
            (Self::Es, AccountGone) => "ya no encuentro esa cuenta",
            (Self::En, NoCard) => "I can't find a card ending in {digits} on your accounts",
            (Self::Es, NoCard) => {
                "no encuentro ninguna tarjeta terminada en {digits} en sus cuentas"
            }
            (Self::En, NoLoanProduct) => "we don't offer {kind} loans",
            (Self::Es, NoLoanProduct) => "no ofrecemos préstamos de tipo {kind}",
            (Self::En, NoLoan) => "I can't find a loan application on your record",
            (Self::Es, NoLoan) => "no encuentro ninguna solicitud de préstamo a su nombre",
            (Self::En, NoTransactions) => "no recent transactions",
            (Self::Es, NoTransactions) => "ningún movimiento reciente",
            (Self::En, NoOrder) => "I can't find an order with the number {id}",
            (Self::Es, NoOrder) => "no encuentro ningún pedido con el número {id}",
            (Self::En, NotYourOrder) => {
                "I can't find an order with the number {id} on your account"
            }
            (Self::Es, NotYourOrder) => "no encuentro ningún pedido con el número {id} a su nombre",
            (Self::En, NotDelivered) => {
                "that order hasn't been delivered yet, so it can't be returned"
            }
            (Self::Es, NotDelivered) => {
                "ese pedido todavía no se ha entregado, así que no se puede devolver"
            }
            (Self::En, ReturnTooLate) => "that order was delivered more than thirty days ago",
            (Self::Es, ReturnTooLate) => "ese pedido se entregó hace más de treinta días",
            (Self::En, AlreadyShipped) => {
                "that order has already shipped, so the address can't be changed"
            }
            (Self::Es, AlreadyShipped) => {
                "ese pedido ya ha salido, así que no se puede cambiar la dirección"
            }
            (Self::En, Paid) => "{amount} to {who} on {when}",
            (Self::Es, Paid) => "{amount} a {who} el {when}",
            (Self::En, Received) => "{amount} from {who} on {when}",
            (Self::Es, Received) => "{amount} de {who} el {when}",
            (Self::En, Percent) => "percent",
            (Self::Es, Percent) => "por ciento",
            (Self::En, ReplacementDays) => "five",
            (Self::Es, ReplacementDays) => "cinco",
            (Self::En, Unavailable) => "our records aren't available right now",
            (Self::Es, Unavailable) => "nuestros registros no están disponibles en este momento",
            (Self::En, NeedVerify) => {
                "I need to verify your identity before I can share account details"
            }
            (Self::Es, NeedVerify) => {
                "necesito verificar su identidad antes de darle datos de la cuenta"
            }
            (Self::En, CannotVerify) => "I can't verify you automatically on this call",
            (Self::Es, CannotVerify) => "no puedo verificarle automáticamente en esta llamada",
            (Self::En, EarlierToday) => "earlier today",
            (Self::Es, EarlierToday) => "hoy mismo",
            (Self::En, Yesterday) => "yesterday",
            (Self::Es, Yesterday) => "ayer",
            (Self::En, OnDay) => "on {day}",
            (Self::Es, OnDay) => "el {day}",
            (Self::En, YesOrNo) => "Sorry, was that a yes or a no?",
            (Self::Es, YesOrNo) => "Perdone, ¿eso es un sí o un no?",
            (Self::En, Sorry) => "Sorry.",
            (Self::Es, Sorry) => "Perdone.",
            (Self::En, LookupFailed) => "Sorry, {reason}.",
            (Self::Es, LookupFailed) => "Lo siento, {reason}.",
            (Self::En, TransferFailed) => {
                "I'm sorry, I couldn't reach an agent just now. I'm still here with you. \
                 What else can I help you with?"
            }
            (Self::Es, TransferFailed) => {
                "Lo siento, ahora mismo no he podido pasarle con un agente. Sigo aquí con \
                 usted. ¿En qué más puedo ayudarle?"
            }
            (Self::En, BackWithBot) => {
                "Thanks for your patience. You're back with the virtual assistant. \
                 What else can I help you with?"
            }
            (Self::Es, BackWithBot) => {
                "Gracias por su paciencia. Vuelve a estar con el asistente virtual. \
                 ¿En qué más puedo ayudarle?"
            }
            (Self::En, NextInLine) => {
                "Thanks for holding. You're next in line, and an agent will be with you shortly."
            }
            (Self::Es, NextInLine) => {
                "Gracias por esperar. Es usted el siguiente, y un agente le atenderá enseguida."
            }
            (Self::En, PlaceInQueue) => {
                "Thanks for holding. You are number {n} in the queue. An agent will be with \
                 you as soon as possible."
            }
            (Self::Es, PlaceInQueue) => {
                "Gracias por esperar. Es usted el número {n} de la cola. Un agente le \
                 atenderá lo antes posible."
            }
            (Self::En, GreetBack) => "Hello! How can I help you today?",
            (Self::Es, GreetBack) => "¡Hola! ¿En qué puedo ayudarle?",
            (Self::En, Closing) => {
                "I'm sorry, this line has to close now. Please call us back in a minute. Goodbye."
            }
            (Self::Es, Closing) => {
                "Lo siento, esta línea tiene que cerrarse ahora. Vuelva a llamarnos dentro de \
                 un minuto, por favor. Adiós."
            }
        }
    }

    /// Greeting words that say nothing about what the caller wants
    /// ("hola", "buenas", "tardes"). Left out when articles are matched by
    /// their words, so "buenas tardes" does not find "cuánto tarda".
    pub fn greeting_words(self) -> &'static [&'static str] {
        match self {
            Self::En => &[
                "hi",
                "hello",
                "hey",
                "hiya",
                "howdy",
                "morning",
                "afternoon",
                "evening",
            ],
            Self::Es => &["hola", "buenas", "buenos", "tardes", "noches", "oiga"],
        }
    }

    /// Whether `text` is only a greeting ("Hello?", "Hola, buenas tardes."):
    /// every word a courtesy word and one of them a greeting proper.
    pub fn greeting_only(self, text: &str) -> bool {
        // Words that may go with a greeting without making it a request.
        let with: &[&str] = match self {
            Self::En => &["good", "day", "there", "um", "uh", "oh", "er"],
            Self::Es => &[
                "buen",
                "día",
                "días",
                "dia",
                "dias",
                "qué",
                "que",
                "tal",
                "señor",
                "señora",
                "señorita",
                "eh",
                "em",
            ],
        };
        let greeting = self.greeting_words();
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        !words.is_empty()
            && words
                .iter()
                .all(|w| greeting.contains(&w.as_str()) || with.contains(&w.as_str()))
            && words.iter().any(|w| greeting.contains(&w.as_str()))
    }

    /// `amount` as a person reads it: "2450 dollars and 75 cents",
    /// "2450 dólares con 75 centavos" (the voice reads the digits).
    pub fn say_money(self, amount: f64, currency: &str) -> String {
        let (unit, units, sub, and) = match (self, currency) {
            (Self::En, "GBP") => ("pound", "pounds", "pence", "and"),
            (Self::En, "EUR") => ("euro", "euros", "cents", "and"),
            (Self::En, _) => ("dollar", "dollars", "cents", "and"),
            (Self::Es, "GBP") => ("libra", "libras", "peniques", "con"),
            (Self::Es, "EUR") => ("euro", "euros", "céntimos", "con"),
            (Self::Es, _) => ("dólar", "dólares", "centavos", "con"),
        };
        let cents = (amount * 100.0).round() as i64;
        let neg = match (cents < 0, self) {
            (false, _) => "",
            (true, Self::En) => "minus ",
            (true, Self::Es) => "menos ",
        };
        let (whole, frac) = ((cents / 100).abs(), (cents % 100).abs());
        let w = format!("{whole} {}", if whole == 1 { unit } else { units });
        if frac == 0 {
            format!("{neg}{w}")
        } else {
            format!("{neg}{w} {and} {frac} {sub}")
        }
    }

    /// "Monday November the 22nd", "lunes 22 de noviembre".
    pub fn say_date(self, d: NaiveDate) -> String {
        let day = d.day();
        match self {
            Self::En => {
                let suffix = match (day % 10, day % 100) {
                    (_, 11..=13) => "th",
                    (1, _) => "st",
                    (2, _) => "nd",
                    (3, _) => "rd",
                    _ => "th",
                };
                format!("{} {} the {day}{suffix}", d.format("%A"), d.format("%B"))
            }
            Self::Es => format!(
                "{} {day} de {}",
                self.weekday(d),
                ES_MONTHS[d.month0() as usize]
            ),
        }
    }

    /// The day's name: "Tuesday", "martes".
    pub fn weekday(self, d: NaiveDate) -> String {
        match self {
            Self::En => d.format("%A").to_string(),
            Self::Es => ES_WEEKDAYS[d.weekday().num_days_from_monday() as usize].into(),
        }
    }

    /// The caller's words rewritten into the forms the slot extractors
    /// read: number words, yes and no, months, weekdays and currencies as
    /// in English, and digit groups as plain digits ("20.000" → "20000",
    /// "12,50" → "12.50"). English is returned as it is.
    pub fn heard(self, text: &str) -> String {
        match self {
            Self::En => text.to_string(),
            Self::Es => spanish_heard(text),
        }
    }
}

const ES_MONTHS: [&str; 12] = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
];
/// Month names as the slot extractors read them.
pub const EN_MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const ES_WEEKDAYS: [&str; 7] = [
    "lunes",
    "martes",
    "miércoles",
    "jueves",
    "viernes",
    "sábado",
    "domingo",
];
const EN_WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Spanish number words as English ones; `None` for any other word.
fn es_number(w: &str) -> Option<&'static str> {
    Some(match w {
        "cero" => "zero",
        "uno" => "one",
        "dos" => "two",
        "tres" => "three",
        "cuatro" => "four",
        "cinco" => "five",
        "seis" => "six",
        "siete" => "seven",
        "ocho" => "eight",
        "nueve" => "nine",
        "diez" => "ten",
        "once" => "eleven",
        "doce" => "twelve",
        "trece" => "thirteen",
        "catorce" => "fourteen",
        "quince" => "fifteen",
        "dieciséis" | "dieciseis" => "sixteen",
        "diecisiete" => "seventeen",
        "dieciocho" => "eighteen",
        "diecinueve" => "nineteen",
        "veinte" => "twenty",
        "veintiuno" | "veintiún" | "veintiuna" => "twenty one",
        "veintidós" | "veintidos" => "twenty two",
        "veintitrés" | "veintitres" => "twenty three",
        "veinticuatro" => "twenty four",
        "veinticinco" => "twenty five",
        "veintiséis" | "veintiseis" => "twenty six",
        "veintisiete" => "twenty seven",
        "veintiocho" => "twenty eight",
        "veintinueve" => "twenty nine",
        "treinta" => "thirty",
        "cuarenta" => "forty",
        "cincuenta" => "fifty",
        "sesenta" => "sixty",
        "setenta" => "seventy",
        "ochenta" => "eighty",
        "noventa" => "ninety",
        "cien" | "ciento" => "one hundred",
        "doscientos" | "doscientas" => "two hundred",
        "trescientos" | "trescientas" => "three hundred",
        "cuatrocientos" | "cuatrocientas" => "four hundred",
        "quinientos" | "quinientas" => "five hundred",
        "seiscientos" | "seiscientas" => "six hundred",
        "setecientos" | "setecientas" => "seven hundred",
        "ochocientos" | "ochocientas" => "eight hundred",
        "novecientos" | "novecientas" => "nine hundred",
        "millón" | "millon" | "millones" => "million",
        _ => return None,
    })
}

/// Other Spanish words the extractors need, as English.
fn es_word(w: &str) -> Option<&'static str> {
    Some(match w {
        "sí" | "si" | "claro" | "vale" | "afirmativo" | "exacto" | "exactamente" => "yes",
        "correcto" | "cierto" => "correct",
        "adelante" => "go ahead",
        "incorrecto" | "equivocado" => "wrong",
        "nunca" => "no",
        "cancelar" | "cancele" => "cancel",
        "dólar" | "dolar" => "dollar",
        "dólares" | "dolares" => "dollars",
        "euro" => "euro",
        "euros" => "euros",
        "libras" => "pounds",
        "centavos" | "céntimos" | "centimos" => "cents",
        "hoy" => "today",
        "mañana" | "manana" => "tomorrow",
        "ayer" => "yesterday",
        "próximo" | "proximo" | "próxima" | "proxima" => "next",
        "pasado" | "pasada" => "last",
        _ => {
            if let Some(i) = ES_MONTHS.iter().position(|m| *m == w) {
                return Some(EN_MONTHS[i]);
            }
            let plain = |s: &str| s.replace('é', "e").replace('á', "a");
            if let Some(i) = ES_WEEKDAYS.iter().position(|d| plain(d) == plain(w)) {
                return Some(EN_WEEKDAYS[i]);
            }
            return None;
        }
    })
}

const ES_TENS: [&str; 7] = [
    "treinta",
    "cuarenta",
    "cincuenta",
    "sesenta",
    "setenta",
    "ochenta",
    "noventa",
];

fn spanish_heard(text: &str) -> String {
    let lower = text.to_lowercase();
    // Words with their punctuation cut off; digit groups joined.
    let words: Vec<String> = lower
        .split_whitespace()
        .map(|w| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '.' && c != ',');
            let w = w.trim_end_matches(['.', ',']);
            es_digits(w)
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let prev = i.checked_sub(1).map(|p| words[p].as_str());
        let next = words.get(i + 1).map(String::as_str);
        let is_num = |x: Option<&str>| {
            x.is_some_and(|x| es_number(x).is_some() || x.chars().all(|c| c.is_ascii_digit()))
        };
        let is_month = |x: Option<&str>| x.is_some_and(|x| ES_MONTHS.contains(&x));
        match w.as_str() {
            // "treinta y dos": the "y" joins tens and units.
            "y" if prev.is_some_and(|p| ES_TENS.contains(&p)) && is_num(next) => {}
            // "dos mil": a bare "mil" is one thousand.
            "mil" if is_num(prev) => out.push("thousand".into()),
            "mil" => out.push("one thousand".into()),
            // "el cinco de marzo", "de 2026".
            "de" if is_month(next) || (is_month(prev) && is_num(next)) => {}
            // "veinte dólares con cincuenta".
            "con" if is_num(next) && is_num(prev) => out.push("and".into()),
            "por" if next == Some("favor") => out.push("please".into()),
            "favor" if prev == Some("por") => {}
            // "un millón", "una" before a number word; alone an article.
            "un" | "una" if is_num(next) => out.push("one".into()),
            // "dos millones de dólares".
            "de" if is_num(prev)
                && next.is_some_and(|n| {
                    matches!(
                        es_word(n),
                        Some("dollar" | "dollars" | "euro" | "euros" | "pounds")
                    )
                }) => {}
            _ => match es_number(w).or_else(|| es_word(w)) {
                Some(en) => out.push(en.into()),
                None => out.push(w.clone()),
            },
        }
    }
    out.join(" ")
}

/// "20.000" → "20000", "1.250,50" → "1250.50", "12,5" → "12.5"; any other
/// word as it is.
fn es_digits(w: &str) -> String {
    if !w.chars().next().is_some_and(|c| c.is_ascii_digit())
        || !w
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ',')
    {
        return w.to_string();
    }
    let (int, frac) = match w.rsplit_once(',') {
        Some((i, f)) if f.len() <= 2 => (i, Some(f)),
        _ => (w, None),
    };
    let groups: Vec<&str> = int.split('.').collect();
    let grouped = groups.len() > 1 && groups[1..].iter().all(|g| g.len() == 3);
    let int = if grouped {
        groups.concat()
    } else {
        int.replace(',', "")
    };
    match frac {
        Some(f) => format!("{int}.{f}"),
        None => int,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spanish_numbers_and_answers_read_as_the_extractors_expect() {
        let h = |s| Lang::Es.heard(s);
        assert_eq!(h("cuatro cinco seis uno"), "four five six one");
        assert_eq!(h("Sí, por favor."), "yes please");
        assert_eq!(h("veinte mil dólares"), "twenty thousand dollars");
        assert_eq!(h("treinta y dos"), "thirty two");
        assert_eq!(h("mil quinientos"), "one thousand five hundred");
        assert_eq!(h("20.000 dólares"), "20000 dollars");
        assert_eq!(h("dos millones de dólares"), "two million dollars");
        assert_eq!(h("12,50 euros"), "12.50 euros");
        assert_eq!(h("el cinco de marzo"), "el five march");
        assert_eq!(h("el miércoles"), "el wednesday");
        assert_eq!(h("no, gracias"), "no gracias");
        assert_eq!(h("con un agente"), "con un agente");
        assert_eq!(h("un millón de dólares"), "one million dollars");
        assert_eq!(Lang::En.heard("Yes, please."), "Yes, please.");
    }

    #[test]
    fn a_greeting_alone_is_told_from_a_request() {
        assert!(Lang::En.greeting_only("Hi, good afternoon."));
        assert!(Lang::En.greeting_only("Hello?"));
        assert!(Lang::En.greeting_only("um, hello there"));
        assert!(!Lang::En.greeting_only("Hi, what's my balance?"));
        assert!(!Lang::En.greeting_only("good"));
        assert!(!Lang::En.greeting_only(""));
        assert!(Lang::Es.greeting_only("Hola, buenas tardes."));
        assert!(Lang::Es.greeting_only("¿Buenos días?"));
        assert!(Lang::Es.greeting_only("Oiga, ¿qué tal?"));
        assert!(!Lang::Es.greeting_only("Hola, quiero saber mi saldo."));
        assert!(!Lang::Es.greeting_only("Hi, good afternoon."));
    }

    #[test]
    fn amounts_and_dates_are_said_in_the_language() {
        assert_eq!(
            Lang::Es.say_money(2450.75, "USD"),
            "2450 dólares con 75 centavos"
        );
        assert_eq!(Lang::En.say_money(1.0, "EUR"), "1 euro");
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert_eq!(Lang::Es.say_date(d), "domingo 22 de noviembre");
        assert_eq!(Lang::En.say_date(d), "Sunday November the 22nd");
        assert_eq!(Lang::parse("es"), Some(Lang::Es));
        assert_eq!(Lang::parse("fr"), None);
    }
}
