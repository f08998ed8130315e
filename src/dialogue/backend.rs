//! Lookups a flow can call by name (`lookup = "balance"`). They read the
//! agent's `data.toml` records for now; the customer store replaces the data
//! source without changing a flow.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::nlu::entities::{say_date, say_money, spell};

/// Every lookup name a flow may use; the agent loader rejects others.
pub const LOOKUPS: &[&str] = &[
    "verify_account",
    "balance",
    "transactions",
    "block_card",
    "loan_rates",
    "order_status",
    "start_return",
    "change_address",
];

/// Values a lookup hands back to the flow's templates.
pub type Vars = BTreeMap<String, String>;

pub struct Backend<'a> {
    pub data: &'a toml::Table,
    pub today: NaiveDate,
}

fn s<'a>(t: &'a toml::Table, k: &str) -> Option<&'a str> {
    t.get(k).and_then(|v| v.as_str())
}

fn f(t: &toml::Table, k: &str) -> Option<f64> {
    t.get(k)
        .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))
}

impl Backend<'_> {
    fn records(&self, kind: &str) -> impl Iterator<Item = &toml::Table> {
        self.data
            .get(kind)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_table())
    }

    fn account(&self, slots: &Vars) -> Result<&toml::Table, String> {
        let last4 = slots.get("account_last4").ok_or("no account number")?;
        let pin = slots.get("pin").ok_or("no PIN")?;
        self.records("accounts")
            .find(|a| {
                s(a, "number").is_some_and(|n| n.ends_with(last4.as_str()))
                    && s(a, "pin") == Some(pin.as_str())
            })
            .ok_or_else(|| "those details don't match our records".to_string())
    }

    fn order(&self, slots: &Vars) -> Result<&toml::Table, String> {
        let id = slots.get("order_id").ok_or("no order number")?;
        self.records("orders")
            .find(|o| s(o, "id") == Some(id.as_str()))
            .ok_or_else(|| format!("I can't find an order with the number {}", spell(id)))
    }

    fn date(&self, t: &toml::Table, k: &str) -> Option<NaiveDate> {
        s(t, k).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    }

    /// Runs lookup `name` with the flow's slots; `Err` carries a reason fit to
    /// be spoken.
    pub fn run(&self, name: &str, slots: &Vars) -> Result<Vars, String> {
        let mut v = Vars::new();
        match name {
            "verify_account" => {
                let a = self.account(slots)?;
                v.insert(
                    "customer_name".into(),
                    s(a, "holder")
                        .unwrap_or("")
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .into(),
                );
            }
            "balance" => {
                let a = self.account(slots)?;
                let cur = s(a, "currency").unwrap_or("USD");
                v.insert(
                    "balance".into(),
                    say_money(f(a, "balance").unwrap_or(0.0), cur),
                );
                v.insert(
                    "available".into(),
                    say_money(f(a, "available").or(f(a, "balance")).unwrap_or(0.0), cur),
                );
            }
            "transactions" => {
                let a = self.account(slots)?;
                let cur = s(a, "currency").unwrap_or("USD");
                let tx: Vec<String> = a
                    .get("transactions")
                    .and_then(|t| t.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_table())
                    .take(3)
                    .map(|t| {
                        let amt = f(t, "amount").unwrap_or(0.0);
                        let what = s(t, "description").unwrap_or("a payment");
                        let when = self.date(t, "date").map(say_date).unwrap_or_default();
                        if amt < 0.0 {
                            format!("{} to {what} on {when}", say_money(-amt, cur))
                        } else {
                            format!("{} from {what} on {when}", say_money(amt, cur))
                        }
                    })
                    .collect();
                if tx.is_empty() {
                    v.insert("transactions".into(), "no recent transactions".into());
                } else {
                    v.insert("transactions".into(), tx.join("; "));
                }
                v.insert("transaction_count".into(), tx.len().to_string());
            }
            "block_card" => {
                let last4 = slots.get("card_last4").ok_or("no card number")?;
                let card = self
                    .records("cards")
                    .find(|c| s(c, "last4") == Some(last4.as_str()))
                    .ok_or_else(|| format!("I can't find a card ending in {}", spell(last4)))?;
                v.insert("card_type".into(), s(card, "type").unwrap_or("card").into());
                v.insert("replacement_days".into(), "five".into());
            }
            "loan_rates" => {
                let kind = slots.get("loan_type").ok_or("no loan type")?;
                let loan = self
                    .records("loans")
                    .find(|l| s(l, "type") == Some(kind.as_str()))
                    .ok_or_else(|| format!("we don't offer {kind} loans"))?;
                v.insert(
                    "rate".into(),
                    format!("{} percent", f(loan, "rate").unwrap_or(0.0)),
                );
                v.insert(
                    "max_amount".into(),
                    say_money(f(loan, "max_amount").unwrap_or(0.0), "USD"),
                );
                if let Some(amount) = slots
                    .get("loan_amount")
                    .and_then(|a| a.split_whitespace().next()?.parse::<f64>().ok())
                {
                    let ok = amount <= f(loan, "max_amount").unwrap_or(f64::MAX);
                    v.insert("within_limit".into(), ok.to_string());
                }
            }
            "order_status" => {
                let o = self.order(slots)?;
                let status = s(o, "status").unwrap_or("processing");
                v.insert("status".into(), status.replace('_', " "));
                v.insert("item".into(), s(o, "item").unwrap_or("your item").into());
                if let Some(eta) = self.date(o, "eta") {
                    v.insert("eta".into(), say_date(eta));
                }
                if let Some(orig) = self.date(o, "promised") {
                    v.insert("promised".into(), say_date(orig));
                    if self.date(o, "eta").is_some_and(|e| e > orig) {
                        v.insert("delayed".into(), "true".into());
                    }
                }
                v.insert(status.into(), "true".into());
            }
            "start_return" => {
                let o = self.order(slots)?;
                if s(o, "status") != Some("delivered") {
                    return Err(
                        "that order hasn't been delivered yet, so it can't be returned".into(),
                    );
                }
                let delivered = self.date(o, "delivered").unwrap_or(self.today);
                if (self.today - delivered).num_days() > 30 {
                    return Err("that order was delivered more than thirty days ago".into());
                }
                v.insert("item".into(), s(o, "item").unwrap_or("your item").into());
                v.insert(
                    "refund".into(),
                    say_money(
                        f(o, "total").unwrap_or(0.0),
                        s(o, "currency").unwrap_or("USD"),
                    ),
                );
            }
            "change_address" => {
                let o = self.order(slots)?;
                if matches!(s(o, "status"), Some("shipped" | "delivered" | "in_transit")) {
                    return Err(
                        "that order has already shipped, so the address can't be changed".into(),
                    );
                }
                v.insert("item".into(), s(o, "item").unwrap_or("your item").into());
            }
            other => return Err(format!("unknown lookup {other}")),
        }
        Ok(v)
    }
}
