select * from {{ ref('visits_seed') }}
