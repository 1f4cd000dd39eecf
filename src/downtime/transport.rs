//! The exact optimum of a transportation problem: `supply[k]` interchangeable units of
//! each class k go into slots (minutes) of `capacity[m]` units each, a unit of class k
//! in slot m costing `cost[k][m]`; the cheapest assignment of every unit. Pure.
//!
//! Min-cost flow by successive shortest paths, one class added at a time (a new
//! class has no arc into it, so the flow stays optimal for the classes added so far).
//! The class nodes are folded away: a path moves a unit of class j from slot a to
//! slot b at `cost[j][b] - cost[j][a]`, so each shortest path is a dense Dijkstra
//! over the slots alone, on reduced costs kept non-negative by slot potentials.
//! Exact for any costs (the tests check it against brute force); fast when slots are
//! few (tens to hundreds) and classes many (thousands).

/// The assignment: per class, the units it puts in each slot; and its total cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// `units[k]`: (slot, units) pairs of class k, slots ascending.
    pub units: Vec<Vec<(usize, u64)>>,
    pub cost: i64,
}

/// Why there is no assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Infeasible {
    #[error("{supply} units do not fit in {capacity} slots' worth of capacity")]
    TooLittleCapacity { supply: u64, capacity: u64 },
    #[error("cost row {row} has {got} slots, not {want}")]
    Ragged { row: usize, got: usize, want: usize },
}

/// The flow so far, and what the shortest paths need of it.
struct Flow<'a> {
    cost: &'a [Vec<i64>],
    slots: usize,
    /// Per slot: the classes with units in it, and how many.
    at: Vec<Vec<(usize, u64)>>,
    used: Vec<u64>,
    capacity: &'a [u64],
    /// Slot potentials: reduced costs `w(a, b) + p[a] - p[b]` are never negative.
    p: Vec<i64>,
    /// `best[a * slots + b]`: the cheapest move of one unit from slot a to slot b
    /// (its cost, and the class moved); `None` when slot a is empty.
    best: Vec<Option<(i64, usize)>>,
}

impl Flow<'_> {
    /// Recomputes slot a's moves after its classes changed.
    fn refresh(&mut self, a: usize) {
        let m = self.slots;
        for b in 0..m {
            self.best[a * m + b] = self.at[a]
                .iter()
                .map(|&(j, _)| (self.cost[j][b] - self.cost[j][a], j))
                .min();
        }
    }

    /// Puts `units` of `class` in `slot`; a class new there adds its moves out of it.
    fn add(&mut self, slot: usize, class: usize, units: u64) {
        match self.at[slot].iter_mut().find(|(j, _)| *j == class) {
            Some(e) => e.1 += units,
            None => {
                self.at[slot].push((class, units));
                let m = self.slots;
                for b in 0..m {
                    let w = (self.cost[class][b] - self.cost[class][slot], class);
                    let best = &mut self.best[slot * m + b];
                    if best.is_none_or(|x| w < x) {
                        *best = Some(w);
                    }
                }
            }
        }
    }

    /// Takes `units` of `class` out of `slot`; a class gone from it takes its moves.
    fn remove(&mut self, slot: usize, class: usize, units: u64) {
        if let Some(i) = self.at[slot].iter().position(|(j, _)| *j == class) {
            self.at[slot][i].1 -= units;
            if self.at[slot][i].1 == 0 {
                self.at[slot].swap_remove(i);
                let m = self.slots;
                if self.best[slot * m..(slot + 1) * m]
                    .iter()
                    .any(|x| x.is_some_and(|x| x.1 == class))
                {
                    self.refresh(slot);
                }
            }
        }
    }

    fn units_of(&self, slot: usize, class: usize) -> u64 {
        self.at[slot].iter().find(|(j, _)| *j == class).map_or(0, |e| e.1)
    }

    /// One shortest path from class k to a slot with room: the slots it goes
    /// through, each with the class moved into it (k first), and its end.
    fn shortest(&mut self, k: usize) -> Vec<(usize, usize)> {
        let m = self.slots;
        let row = &self.cost[k];
        // The source's own potential keeps its arcs non-negative.
        let pk = (0..m).map(|b| self.p[b] - row[b]).max().unwrap_or(0);
        let mut dist: Vec<i64> = (0..m).map(|b| row[b] + pk - self.p[b]).collect();
        // (previous slot, class moved into this one); None: straight from k.
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; m];
        let mut done = vec![false; m];
        let end = loop {
            let Some(a) = (0..m).filter(|&b| !done[b]).min_by_key(|&b| (dist[b], b)) else {
                unreachable!("a slot with room exists: capacity was checked");
            };
            done[a] = true;
            if self.used[a] < self.capacity[a] {
                break a;
            }
            for b in 0..m {
                if done[b] {
                    continue;
                }
                if let Some((w, j)) = self.best[a * m + b] {
                    let d = dist[a] + w + self.p[a] - self.p[b];
                    if d < dist[b] {
                        dist[b] = d;
                        parent[b] = Some((a, j));
                    }
                }
            }
        };
        let cap = dist[end];
        for (p, d) in self.p.iter_mut().zip(&dist) {
            *p += (*d).min(cap);
        }
        let mut path = Vec::new();
        let mut b = end;
        loop {
            match parent[b] {
                Some((a, j)) => {
                    path.push((b, j));
                    b = a;
                }
                None => {
                    path.push((b, k));
                    break;
                }
            }
        }
        path.reverse();
        path
    }
}

/// The cheapest assignment of every unit (see the module's documentation).
pub fn solve(supply: &[u64], capacity: &[u64], cost: &[Vec<i64>]) -> Result<Assignment, Infeasible> {
    let slots = capacity.len();
    let (total_supply, total_capacity) = (supply.iter().sum::<u64>(), capacity.iter().sum::<u64>());
    if total_supply > total_capacity {
        return Err(Infeasible::TooLittleCapacity {
            supply: total_supply,
            capacity: total_capacity,
        });
    }
    if let Some((row, r)) = cost.iter().enumerate().find(|(_, r)| r.len() != slots) {
        return Err(Infeasible::Ragged {
            row,
            got: r.len(),
            want: slots,
        });
    }
    let mut flow = Flow {
        cost,
        slots,
        at: vec![Vec::new(); slots],
        used: vec![0; slots],
        capacity,
        p: vec![0; slots],
        best: vec![None; slots * slots],
    };
    for (k, &s) in supply.iter().enumerate() {
        let mut left = s;
        while left > 0 {
            let path = flow.shortest(k);
            // Each step moves a unit of its class out of the slot before it.
            let mut units = left.min(flow.capacity[path[path.len() - 1].0] - flow.used[path[path.len() - 1].0]);
            for w in path.windows(2) {
                units = units.min(flow.units_of(w[0].0, w[1].1));
            }
            flow.add(path[0].0, k, units);
            for w in path.windows(2) {
                let ((a, _), (b, j)) = (w[0], w[1]);
                flow.remove(a, j, units);
                flow.add(b, j, units);
            }
            let end = path[path.len() - 1].0;
            flow.used[end] += units;
            left -= units;
        }
    }
    let mut units = vec![Vec::new(); supply.len()];
    let mut total = 0;
    for (slot, classes) in flow.at.iter().enumerate() {
        for &(k, n) in classes {
            units[k].push((slot, n));
            total += cost[k][slot] * n as i64;
        }
    }
    for u in &mut units {
        u.sort_unstable();
    }
    Ok(Assignment { units, cost: total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every way of putting the units (one class each) into the slots.
    fn brute_force(classes: &[usize], capacity: &[u64], cost: &[Vec<i64>]) -> i64 {
        fn go(i: usize, classes: &[usize], left: &mut [u64], cost: &[Vec<i64>], sum: i64, best: &mut i64) {
            if i == classes.len() {
                *best = (*best).min(sum);
                return;
            }
            for m in 0..left.len() {
                if left[m] > 0 {
                    left[m] -= 1;
                    go(i + 1, classes, left, cost, sum + cost[classes[i]][m], best);
                    left[m] += 1;
                }
            }
        }
        let mut best = i64::MAX;
        go(0, classes, &mut capacity.to_vec(), cost, 0, &mut best);
        best
    }

    /// Random tiny instances, arbitrary costs and costs that grow with the slot (as
    /// downtime does): the solver's cost is brute force's, and its assignment is
    /// whole and within every slot's capacity.
    #[test]
    fn agrees_with_brute_force_on_tiny_instances() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(26);
        for case in 0..400 {
            let classes = rng.random_range(1..=4usize);
            let slots = rng.random_range(1..=4usize);
            let supply: Vec<u64> = (0..classes).map(|_| rng.random_range(0..=3)).collect();
            let units: u64 = supply.iter().sum();
            let mut capacity: Vec<u64> = (0..slots).map(|_| rng.random_range(0..=3)).collect();
            while capacity.iter().sum::<u64>() < units {
                capacity[rng.random_range(0..slots)] += 1;
            }
            let growing = case % 2 == 0;
            let cost: Vec<Vec<i64>> = (0..classes)
                .map(|_| {
                    let mut acc = 0;
                    (0..slots)
                        .map(|_| {
                            let r = rng.random_range(-20..=40);
                            if growing {
                                acc += r.max(0);
                                acc
                            } else {
                                r
                            }
                        })
                        .collect()
                })
                .collect();
            let each: Vec<usize> = supply
                .iter()
                .enumerate()
                .flat_map(|(k, &s)| std::iter::repeat_n(k, s as usize))
                .collect();
            let got = solve(&supply, &capacity, &cost).unwrap();
            assert_eq!(
                got.cost,
                brute_force(&each, &capacity, &cost),
                "case {case}: {supply:?} {capacity:?} {cost:?}"
            );
            for (k, u) in got.units.iter().enumerate() {
                assert_eq!(
                    u.iter().map(|x| x.1).sum::<u64>(),
                    supply[k],
                    "case {case}: class {k} whole"
                );
            }
            for (m, &c) in capacity.iter().enumerate() {
                let used: u64 = got.units.iter().flatten().filter(|x| x.0 == m).map(|x| x.1).sum();
                assert!(used <= c, "case {case}: slot {m} over capacity");
            }
        }
    }

    #[test]
    fn too_little_capacity_is_an_error() {
        let err = solve(&[3], &[1, 1], &[vec![0, 0]]).unwrap_err();
        assert_eq!(err.to_string(), "3 units do not fit in 2 slots' worth of capacity");
        assert!(matches!(
            solve(&[1], &[1, 1], &[vec![0]]),
            Err(Infeasible::Ragged { .. })
        ));
    }

    /// Urgent first: the class whose cost grows fastest takes the early slot.
    #[test]
    fn the_class_that_loses_most_by_waiting_goes_first() {
        let got = solve(&[1, 1], &[1, 1], &[vec![1, 2], vec![1, 10]]).unwrap();
        assert_eq!(got.units, vec![vec![(1, 1)], vec![(0, 1)]]);
        assert_eq!(got.cost, 3);
    }
}
