//! Lookups a flow can call by name (`lookup = "balance"`), answered from the
//! customer store. Account data and actions need a verified account:
//! `verify_account` sets it, and `balance`/`transactions`/`loan_status`/
//! `block_card` refuse without it, so no flow can leak account data or act
//! on an account by skipping verification.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::nlu::entities::spell;
use crate::nlu::lang::{Lang, Phrase};
use crate::store::{Customer, ReturnRecord, Store, StoreError, Verification, PIN_MAX_FAILURES};

/// Every lookup name a flow may use; the agent loader rejects others.
pub const LOOKUPS: &[&str] = &[
    "verify_account",
    "balance",
    "transactions",
    "block_card",
    "loan_rates",
    "loan_status",
    "order_status",
    "start_return",
    "change_address",
    "save_address",
    "record_return",
];

/// Set by `verify_account`; the manager keeps it out of templates.
pub const VERIFIED_KEY: &str = "__verified_account";

/// Values a lookup hands back to the flow's templates.
pub type Vars = BTreeMap<String, String>;

pub struct Backend<'a> {
    pub store: &'a Store,
    pub today: NaiveDate,
    /// The caller, when recognised by caller ID.
    pub caller: Option<&'a Customer>,
    /// The account verified earlier in this call.
    pub verified: Option<&'a str>,
    /// The language answers are said in.
    pub lang: Lang,
}

fn day(d: &Option<String>) -> Option<NaiveDate> {
    d.as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

impl Backend<'_> {
    fn say(&self, p: Phrase) -> String {
        self.lang.phrase(p).to_string()
    }

    fn unavailable(&self, e: StoreError) -> String {
        tracing::error!(error = %e, "customer store lookup failed");
        self.say(Phrase::Unavailable)
    }

    fn verified_account(&self) -> Result<crate::store::Account, String> {
        let id = self.verified.ok_or_else(|| self.say(Phrase::NeedVerify))?;
        self.store
            .wait(self.store.account(id))
            .map_err(|e| self.unavailable(e))?
            .ok_or_else(|| self.say(Phrase::AccountGone))
    }

    fn order(&self, slots: &Vars) -> Result<crate::store::Order, String> {
        let id = slots.get("order_id").ok_or("no order number")?;
        let o = self
            .store
            .wait(self.store.order(id))
            .map_err(|e| self.unavailable(e))?
            .ok_or_else(|| self.say(Phrase::NoOrder).replace("{id}", &spell(id)))?;
        // A recognised caller only hears about their own orders.
        if let Some(c) = self.caller {
            if o.customer_id != c.id {
                return Err(self.say(Phrase::NotYourOrder).replace("{id}", &spell(id)));
            }
        }
        Ok(o)
    }

    /// Runs lookup `name` with the flow's slots; `Err` carries a reason fit to
    /// be spoken.
    pub fn run(&self, name: &str, slots: &Vars) -> Result<Vars, String> {
        let mut v = Vars::new();
        let st = self.store;
        match name {
            "verify_account" => {
                let last4 = slots.get("account_last4").ok_or("no account number")?;
                let pin = slots.get("pin").ok_or("no PIN")?;
                // A wrong PIN and a locked account sound the same: the
                // caller learns nothing about which accounts exist.
                let no_match = self.say(Phrase::NoMatch);
                let a = match st
                    .wait(st.verify_account(last4, pin, self.caller.map(|c| c.id.as_str())))
                    .map_err(|e| self.unavailable(e))?
                {
                    Verification::Verified(a) => a,
                    Verification::NoMatch => return Err(no_match),
                    Verification::LockedNow(ids) => {
                        for id in &ids {
                            tracing::warn!(
                                account = %crate::nlu::numbers::mask_digits(id),
                                failures = PIN_MAX_FAILURES,
                                "ALERT: account locked after repeated wrong PINs"
                            );
                        }
                        return Err(no_match);
                    }
                };
                let holder = st
                    .wait(st.customer(&a.customer_id))
                    .map_err(|e| self.unavailable(e))?
                    .map(|c| c.first_name().to_string())
                    .unwrap_or_default();
                v.insert("customer_name".into(), holder);
                v.insert(VERIFIED_KEY.into(), a.id);
            }
            "balance" => {
                let a = self.verified_account()?;
                v.insert(
                    "balance".into(),
                    self.lang.say_money(a.balance, &a.currency),
                );
                v.insert(
                    "available".into(),
                    self.lang.say_money(a.available, &a.currency),
                );
            }
            "transactions" => {
                let a = self.verified_account()?;
                let tx: Vec<String> = st
                    .wait(st.transactions(&a.id, 3))
                    .map_err(|e| self.unavailable(e))?
                    .iter()
                    .map(|t| {
                        let when = day(&Some(t.day.clone()))
                            .map(|d| self.lang.say_date(d))
                            .unwrap_or_default();
                        let p = if t.amount < 0.0 {
                            Phrase::Paid
                        } else {
                            Phrase::Received
                        };
                        self.lang
                            .phrase(p)
                            .replace(
                                "{amount}",
                                &self.lang.say_money(t.amount.abs(), &a.currency),
                            )
                            .replace("{who}", &t.description)
                            .replace("{when}", &when)
                    })
                    .collect();
                if tx.is_empty() {
                    v.insert("transactions".into(), self.say(Phrase::NoTransactions));
                } else {
                    v.insert("transactions".into(), tx.join("; "));
                }
                v.insert("transaction_count".into(), tx.len().to_string());
            }
            "block_card" => {
                // Only a verified caller's own cards: a stranger can neither
                // block someone's card nor learn which card numbers exist.
                let a = self.verified_account()?;
                let last4 = slots.get("card_last4").ok_or("no card number")?;
                let card = st
                    .wait(st.card_of(&a.customer_id, last4))
                    .map_err(|e| self.unavailable(e))?
                    .ok_or_else(|| self.say(Phrase::NoCard).replace("{digits}", &spell(last4)))?;
                st.wait(st.block_card(&card.account_id, last4))
                    .map_err(|e| self.unavailable(e))?;
                v.insert("card_type".into(), card.kind);
                v.insert("replacement_days".into(), self.say(Phrase::ReplacementDays));
            }
            "loan_rates" => {
                let kind = slots.get("loan_type").ok_or("no loan type")?;
                let loan = st
                    .wait(st.loan_product(kind))
                    .map_err(|e| self.unavailable(e))?
                    .ok_or_else(|| self.say(Phrase::NoLoanProduct).replace("{kind}", kind))?;
                v.insert(
                    "rate".into(),
                    format!("{} {}", loan.rate, self.say(Phrase::Percent)),
                );
                v.insert(
                    "max_amount".into(),
                    self.lang.say_money(loan.max_amount, "USD"),
                );
                if let Some(amount) = slots
                    .get("loan_amount")
                    .and_then(|a| a.split_whitespace().next()?.parse::<f64>().ok())
                {
                    v.insert(
                        "within_limit".into(),
                        (amount <= loan.max_amount).to_string(),
                    );
                }
            }
            "loan_status" => {
                let a = self.verified_account()?;
                let loans = st
                    .wait(st.loans_of(&a.customer_id))
                    .map_err(|e| self.unavailable(e))?;
                let l = loans.first().ok_or_else(|| self.say(Phrase::NoLoan))?;
                v.insert("loan_kind".into(), l.kind.clone());
                v.insert(
                    "loan_amount".into(),
                    self.lang.say_money(l.amount, &a.currency),
                );
                v.insert("loan_status".into(), l.status.clone());
                if let Some(d) = day(&Some(l.updated.clone())) {
                    v.insert("loan_updated".into(), self.lang.say_date(d));
                }
            }
            "order_status" => {
                let o = self.order(slots)?;
                v.insert("status".into(), o.status.replace('_', " "));
                v.insert("item".into(), o.item.clone());
                let eta = day(&o.eta);
                if let Some(eta) = eta {
                    v.insert("eta".into(), self.lang.say_date(eta));
                }
                if let Some(orig) = day(&o.promised) {
                    v.insert("promised".into(), self.lang.say_date(orig));
                    if eta.is_some_and(|e| e > orig) && o.status != "delivered" {
                        v.insert("delayed".into(), "true".into());
                    }
                }
                v.insert(o.status.clone(), "true".into());
            }
            "start_return" => {
                let o = self.order(slots)?;
                if o.status != "delivered" {
                    return Err(self.say(Phrase::NotDelivered));
                }
                let delivered = day(&o.delivered).unwrap_or(self.today);
                if (self.today - delivered).num_days() > 30 {
                    return Err(self.say(Phrase::ReturnTooLate));
                }
                v.insert("item".into(), o.item.clone());
                v.insert("refund".into(), self.lang.say_money(o.total, &o.currency));
            }
            "change_address" => {
                let o = self.order(slots)?;
                if matches!(o.status.as_str(), "shipped" | "delivered" | "in_transit") {
                    return Err(self.say(Phrase::AlreadyShipped));
                }
                v.insert("item".into(), o.item.clone());
            }
            // Writes run after the caller confirmed, as their own flow steps.
            "save_address" => {
                let o = self.order(slots)?;
                let street = slots.get("street").ok_or("no street")?;
                let zip = slots.get("postcode").ok_or("no zip code")?;
                st.wait(st.set_order_address(&o.id, &format!("{street}, {zip}")))
                    .map_err(|e| self.unavailable(e))?;
            }
            "record_return" => {
                let o = self.order(slots)?;
                let r = ReturnRecord {
                    id: format!("R-{}", uuid::Uuid::new_v4().simple()),
                    order_id: o.id.clone(),
                    reason: slots
                        .get("return_reason")
                        .cloned()
                        .unwrap_or_else(|| "unspecified".into()),
                    status: "label_sent".into(),
                    refund: o.total,
                    created_ms: crate::store::now_ms(),
                };
                st.wait(st.insert_return(&r))
                    .map_err(|e| self.unavailable(e))?;
                v.insert("return_id".into(), r.id);
            }
            other => return Err(format!("unknown lookup {other}")),
        }
        Ok(v)
    }
}
