select * from {{ ref('regions_seed') }}
